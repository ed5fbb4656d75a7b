//! `coop::hyper` (`--features hyper`): an HTTP/2 server whose streams run on
//! [`coop::hyper::Executor`], fetched by curl; hyper's own I/O traits on a `TcpStream`
//! (a body of 4 MiB in and back, read into hyper's unzeroed buffer); an HTTP/1 header timeout on
//! [`coop::hyper::Timer`]; and the timer's sleeps, which must not be touched off their
//! thread (a poll there panics, a drop there leaks and nothing else happens).
#![cfg(not(miri))]
#![cfg(feature = "hyper")]

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{LIMIT, bounded};
use http_body_util::Full;
use hyper::rt::Timer as _;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use smol_hyper::rt::FuturesIo;

/// A handler whose future is not `Send` (it holds an `Rc`): the executor takes it.
async fn hello(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let local = Rc::new(request.uri().path().to_string());
    coop::yield_now().await;
    Ok(Response::new(Full::new(Bytes::from(format!(
        "h2 {local}\n"
    )))))
}

#[test]
fn an_http2_server_on_coops_executor_answers_curl() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        coop::block_on(async move {
            let listener = coop::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            // Two connections, then done.
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.unwrap();
                let connection = http2::Builder::new(coop::hyper::Executor)
                    .timer(coop::hyper::Timer)
                    .serve_connection(stream, service_fn(hello));
                connection.await.unwrap();
            }
        })
    });
    let addr = rx.recv_timeout(LIMIT).unwrap();
    // One stream per connection: curl 7.88 fails (exit 16) when it reuses a
    // prior-knowledge connection for a second URL, whatever the server.
    for path in ["/one", "/two"] {
        let url = format!("http://{addr}{path}");
        let output = Command::new("curl")
            .args(["-s", "--max-time", "20", "--http2-prior-knowledge", &url])
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("h2 {path}\n")
        );
    }
    server.join().unwrap();
}

#[test]
fn a_header_read_timeout_runs_on_coops_timer() {
    bounded(LIMIT, || {
        let (tx, rx) = std::sync::mpsc::channel();
        let client = std::thread::spawn(move || {
            let addr = rx.recv().unwrap();
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(LIMIT)).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            // The head never ends: the server gives up, and closes.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        });
        coop::block_on(async move {
            let listener = coop::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let started = Instant::now();
            let served = http1::Builder::new()
                .timer(coop::hyper::Timer)
                .header_read_timeout(Duration::from_millis(200))
                .serve_connection(FuturesIo::new(stream), service_fn(hello))
                .await;
            let error = served.expect_err("a head that never ends");
            assert!(error.is_timeout(), "{error}");
            assert!(started.elapsed() >= Duration::from_millis(200));
        });
        client.join().unwrap();
    });
}

#[test]
fn a_timer_sleep_ends_at_its_deadline() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let started = Instant::now();
            coop::hyper::Timer.sleep(Duration::from_millis(20)).await;
            assert!(started.elapsed() >= Duration::from_millis(20));
            let deadline = Instant::now() + Duration::from_millis(10);
            coop::hyper::Timer.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline);
        });
    });
}

#[test]
fn a_timer_sleep_polled_on_another_thread_panics_and_dropped_there_is_let_be() {
    bounded(LIMIT, || {
        coop::block_on(async {
            // Polled once here: it holds this runtime's core.
            let mut polled = coop::hyper::Timer.sleep(Duration::from_secs(60));
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            assert!(polled.as_mut().poll(&mut cx).is_pending());
            let other = std::thread::spawn(move || {
                let waker = std::task::Waker::noop();
                let mut cx = std::task::Context::from_waker(waker);
                let _ = Pin::as_mut(&mut polled).poll(&mut cx);
            });
            let panic = other.join().expect_err("a poll off its thread");
            let message = panic.downcast_ref::<&str>().copied().unwrap_or_default();
            assert!(message.contains("other than its own"), "{message}");

            // Dropped off its thread: leaked, and the runtime here goes on with its timers.
            let mut dropped = coop::hyper::Timer.sleep(Duration::from_secs(60));
            assert!(dropped.as_mut().poll(&mut cx).is_pending());
            std::thread::spawn(move || drop(dropped)).join().unwrap();
            coop::time::sleep(Duration::from_millis(5)).await;
        });
    });
}

#[test]
fn the_executor_runs_futures_that_are_not_send_and_survives_their_panics() {
    bounded(LIMIT, || {
        coop::block_on(async {
            use hyper::rt::Executor as _;
            let ran = Rc::new(std::cell::Cell::new(0));
            let executor = coop::hyper::Executor;
            executor.execute(async { panic!("a stream's task panics") });
            for _ in 0..3 {
                let ran = Rc::clone(&ran);
                executor.execute(async move {
                    coop::yield_now().await;
                    ran.set(ran.get() + 1);
                });
            }
            while ran.get() < 3 {
                coop::yield_now().await;
            }
        });
    });
}

/// Echoes the request body.
async fn echo(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<hyper::body::Incoming>, Infallible> {
    Ok(Response::new(request.into_body()))
}

#[test]
fn hyper_reads_and_writes_a_tcp_stream_itself() {
    let body: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let file = std::env::temp_dir().join(format!("coop-hyper-{}", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        coop::block_on(async move {
            let listener = coop::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            http1::Builder::new()
                .serve_connection(stream, service_fn(echo))
                .await
                .unwrap();
        })
    });
    let addr = rx.recv_timeout(LIMIT).unwrap();
    let output = Command::new("curl")
        .args(["-s", "--max-time", "20", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{addr}/"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let _ = std::fs::remove_file(&file);
    assert!(output.status.success(), "{:?}", output.status);
    assert!(
        output.stdout == body,
        "{} bytes back, not the same",
        output.stdout.len()
    );
    server.join().unwrap();
}
