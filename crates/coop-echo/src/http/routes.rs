//! What each request gets: `/echo` its body back, `/sse` and `/stream` a stream, `/` a
//! page for a browser, a WebSocket upgrade the 101, anything else its description.

use std::cell::Cell;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::asked::Asked;
use super::body::{Reply, Sse};
use super::{Peer, Shared, describe, websocket};

/// The methods counted by name in the metrics; the rest are `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// The statuses counted by code in the metrics; the rest are `other`.
pub const STATUSES: [u16; 8] = [101, 200, 400, 404, 408, 413, 426, 500];

/// A body larger than this, sent to be described, is answered 413.
pub const DESCRIBE_BODY_MAX: usize = 1 << 20;

/// A body to be described that has not all come within this long is answered 408.
pub const BODY_TIME: Duration = Duration::from_secs(30);

/// The page `GET /` gives a browser: a WebSocket echo to try by hand.
const PAGE: &str = include_str!("page.html");

/// What one connection's requests add up to, beside the thread's totals.
#[derive(Debug, Default)]
pub(crate) struct Connection {
    /// A request was answered 101: the stream goes to the WebSocket echo next.
    pub upgraded: Cell<bool>,
    /// A request asked for a reset (`?reset=true`, HTTP/1.1): the connection is reset.
    pub reset: Cell<bool>,
    /// A request asked for a close (`?close=true`, HTTP/2): GOAWAY after its answer.
    pub close: Cell<bool>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
}

impl Connection {
    pub(crate) fn took(&self, shared: &Shared, n: usize) {
        super::add(&self.bytes_in, n as u64);
        super::add(&shared.totals.bytes_in, n as u64);
    }

    pub(crate) fn gave(&self, shared: &Shared, n: usize) {
        super::add(&self.bytes_out, n as u64);
        super::add(&shared.totals.bytes_out, n as u64);
    }
}

/// The service of one connection.
pub(crate) struct Routes {
    shared: Rc<Shared>,
    who: Rc<Peer>,
    h2: bool,
    connection: Rc<Connection>,
    /// Answers given by these routes are counted by the caller (once shaped as asked).
    uncounted: bool,
}

/// An error of a request's answer: HTTP/2 resets its stream (`?reset=true`).
type Failed = Box<dyn std::error::Error + Send + Sync>;

type Answer = Result<Response<Reply>, Failed>;

impl Routes {
    pub(crate) fn new(
        shared: Rc<Shared>,
        who: Peer,
        h2: bool,
        connection: Rc<Connection>,
    ) -> Routes {
        Routes {
            shared,
            who: Rc::new(who),
            h2,
            connection,
            uncounted: false,
        }
    }

    /// The same routes, for a request whose answer is counted elsewhere (or not).
    fn with_count(&self, uncounted: bool) -> Routes {
        Routes {
            shared: Rc::clone(&self.shared),
            who: Rc::clone(&self.who),
            h2: self.h2,
            connection: Rc::clone(&self.connection),
            uncounted,
        }
    }

    /// Counts a fault a request asked for (with `--fault` or `--admin`), and says so at
    /// debug level.
    fn acted(&self, kind: &'static str, what: &str) {
        if let Some(table) = &self.shared.faults {
            let client = self.who.client.unwrap_or(([0, 0, 0, 0], 0).into());
            table.acted_kind(kind, client, what);
        }
    }

    /// What `request`'s query asks of its answer (or `--http-defaults`, if it asks for
    /// nothing).
    fn asked(&self, request: &Request<Incoming>) -> Result<Option<Arc<Asked>>, String> {
        let query = request
            .uri()
            .query()
            .filter(|_| request.uri().path() != "/stream");
        match query.map(Asked::from_query).transpose()?.flatten() {
            Some(asked) => Ok(Some(Arc::new(asked))),
            None => Ok(self.shared.config.defaults.clone()),
        }
    }

    /// Answers `request` as it asks: reset, held, shaped, closed.
    #[inline(never)]
    fn faulty(
        &self,
        request: Request<Incoming>,
        asked: Arc<Asked>,
    ) -> <Self as hyper::service::Service<Request<Incoming>>>::Future {
        let method = request.method().clone();
        if asked.reset {
            self.acted("reset", "reset instead of an answer");
            if self.h2 {
                return Either::Right(Box::pin(ready(Err(Failed::from(
                    "reset, as the request asked (?reset=true)",
                )))));
            }
            self.connection.reset.set(true);
            return Either::Right(Box::pin(std::future::pending()));
        }
        let routes = self.with_count(false);
        let answer = self.with_count(true).answer(request);
        Either::Right(Box::pin(async move {
            if let Some(delay) = asked.delay {
                routes.acted("delay", &format!("answer held {delay:?}"));
                coop::time::sleep(delay).await;
            }
            let mut response = answer.await?;
            let status = asked.draws_status();
            if let Some(status) = status {
                routes.acted("status", &format!("answered {status}"));
            }
            asked.shape(&mut response, status);
            if asked.close {
                routes.acted("close", "closed after its answer");
                if routes.h2 {
                    routes.connection.close.set(true);
                } else {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
            }
            Ok(routes.count(&method, response))
        }))
    }

    /// Counts the answer to a request of `method`, by its status.
    fn count(&self, method: &Method, response: Response<Reply>) -> Response<Reply> {
        if self.uncounted {
            return response;
        }
        let row = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let status = response.status().as_u16();
        let column = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        self.shared.totals.requests.borrow_mut()[row][column] += 1;
        response
    }
}

impl hyper::service::Service<Request<Incoming>> for Routes {
    type Response = Response<Reply>;
    type Error = Failed;
    // Unboxed for the answers made at once (`/echo` among them): hyper's HTTP/1 wants
    // the future `Unpin`, and a box per request would cost `/echo` an allocation.
    type Future = Either<Ready<Answer>, Pin<Box<dyn Future<Output = Answer>>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let method = request.method().clone();
        if websocket::wanted(request.headers()) {
            let response = match websocket::accept(&request, self.h2) {
                Ok(response) => {
                    self.connection.upgraded.set(true);
                    response
                }
                Err((status, why)) => {
                    let mut response = text(status, why);
                    if status == StatusCode::UPGRADE_REQUIRED {
                        response.headers_mut().insert(
                            header::SEC_WEBSOCKET_VERSION,
                            HeaderValue::from_static("13"),
                        );
                    }
                    response
                }
            };
            return Either::Left(ready(Ok(self.count(&method, response))));
        }
        match self.asked(&request) {
            Ok(None) => self.answer(request),
            Ok(Some(asked)) => self.faulty(request, asked),
            Err(why) => Either::Left(ready(Ok(
                self.count(&method, text(StatusCode::BAD_REQUEST, &why))
            ))),
        }
    }
}

impl Routes {
    /// The answer of the route `request` names.
    fn answer(
        &self,
        request: Request<Incoming>,
    ) -> <Self as hyper::service::Service<Request<Incoming>>>::Future {
        let method = request.method().clone();
        let response = match request.uri().path() {
            "/echo" => echo(request, &self.shared, &self.connection),
            "/sse" => match Sse::from_query(request.uri().query()) {
                Ok(sse) => {
                    let mut response = Response::new(Reply::Sse(sse));
                    let headers = response.headers_mut();
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    );
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    response
                }
                Err(why) => text(StatusCode::BAD_REQUEST, &why),
            },
            "/stream" => match Reply::stream_from_query(request.uri().query()) {
                Ok(body) => {
                    let mut response = Response::new(body);
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    response
                }
                Err(why) => text(StatusCode::BAD_REQUEST, &why),
            },
            "/" if wants_html(&request) => {
                let mut response = Response::new(Reply::full(Bytes::from_static(PAGE.as_bytes())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
            }
            _ => {
                let shared = Rc::clone(&self.shared);
                let who = Rc::clone(&self.who);
                let connection = Rc::clone(&self.connection);
                let routes = self.with_count(self.uncounted);
                return Either::Right(Box::pin(async move {
                    let response = described(request, &shared, &who, &connection).await;
                    Ok(routes.count(&method, response))
                }));
            }
        };
        Either::Left(ready(Ok(self.count(&method, response))))
    }
}

/// `/echo`: the request's body, as it comes, with its content type.
fn echo(
    request: Request<Incoming>,
    shared: &Rc<Shared>,
    connection: &Rc<Connection>,
) -> Response<Reply> {
    let (parts, body) = request.into_parts();
    let mut response = Response::new(Reply::Echo {
        body,
        shared: Rc::clone(shared),
        connection: Rc::clone(connection),
    });
    if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, kind.clone());
    }
    response
}

/// Any other path: the request described in JSON, once its body is in.
async fn described(
    request: Request<Incoming>,
    shared: &Shared,
    who: &Peer,
    connection: &Connection,
) -> Response<Reply> {
    let (parts, mut body) = request.into_parts();
    let mut collected = BytesMut::new();
    let read = coop::time::timeout(shared.body_time, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| (StatusCode::BAD_REQUEST, format!("the body failed: {e}")))?;
            if let Some(data) = frame.data_ref() {
                connection.took(shared, data.len());
                if collected.len() + data.len() > DESCRIBE_BODY_MAX {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "a body to describe is at most {DESCRIBE_BODY_MAX} bytes (/echo takes any size)"
                        ),
                    ));
                }
                collected.extend_from_slice(data);
            }
        }
        Ok(())
    })
    .await;
    let failed = match read {
        Ok(Ok(())) => None,
        Ok(Err(failed)) => Some(failed),
        Err(_) => Some((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not come within {} s",
                shared.body_time.as_secs_f64()
            ),
        )),
    };
    if let Some((status, why)) = failed {
        let mut response = text(status, &why);
        // The rest of the body is not read: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let json = describe::describe(&parts, &collected, who, &shared.config, shared.thread);
    connection.gave(shared, json.len());
    let mut response = Response::new(Reply::full(Bytes::from(json)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether a `GET /` comes from a browser (`Accept: text/html`).
fn wants_html(request: &Request<Incoming>) -> bool {
    request.method() == Method::GET
        && request
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|accept| accept.to_str().is_ok_and(|a| a.contains("text/html")))
}

/// A short plain-text answer: `why`, one line.
pub(crate) fn text(status: StatusCode, why: &str) -> Response<Reply> {
    let mut response = Response::new(Reply::full(Bytes::from(format!("{why}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
