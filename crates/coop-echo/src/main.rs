//! `coop-echo`: the seed's echo server on the coop scheduler.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use coop_echo::bench::{self, BenchArgs};
use coop_echo::echo::Framing;
use coop_echo::service::{self, Service};
use coop_echo::tls::ClientTls;
use coop_echo::worker;

/// An echo server on coop, a cooperative scheduler: each chunk a client sends comes
/// back with `GOT:` in front. With no command, it serves.
#[derive(Debug, Parser)]
#[command(name = "coop-echo", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Options of `serve`, which runs when no command is given.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the echo server (the default).
    Serve(ServeArgs),
    /// Load an echo server: many connections, every reply checked, latency measured.
    Bench(BenchArgs),
    /// Talk to an echo server: lines from stdin go out, replies are printed.
    Client(ClientArgs),
    /// Watch a running server's scheduler live (it must run with --admin).
    Top(TopArgs),
}

#[derive(Debug, Args)]
struct TopArgs {
    /// The server's --admin address: HOST:PORT, or a port on 127.0.0.1.
    #[arg(long, value_name = "ADDR", value_parser = admin_address)]
    admin: SocketAddr,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  coop-echo client                    localhost, port 25000
  coop-echo client localhost:25000    HOST:PORT
  coop-echo client localhost 25000    HOST PORT
  coop-echo client [::1]:25000        IPv6 (or: coop-echo client ::1 25000)")]
struct ClientArgs {
    /// Server to talk to: a name or an address (IPv4, or IPv6 bare or in brackets), with
    /// its port after a colon or as the next argument [default: localhost]
    #[arg(value_name = "HOST[:PORT]")]
    host: Option<String>,

    /// Its port, if HOST does not give it [default: 25000]
    #[arg(value_name = "PORT")]
    port: Option<u16>,

    /// Begin with a PROXY protocol header naming this client's own address, as a load
    /// balancer would (for a server run with --proxy-protocol). A v1 header naming its own
    /// connection is what HAProxy's health checks send: the server logs such a
    /// connection at debug level.
    #[arg(long, value_enum, value_name = "VERSION")]
    send_proxy: Option<coop_echo::proxy::SendProxy>,

    /// Speak TLS (to a server run with --tls-cert); give --tls-ca or --insecure.
    #[arg(long, requires = "trust")]
    tls: bool,

    /// Trust the certificates in this file (PEM) to sign the server's.
    #[arg(long, value_name = "PEM", requires = "tls", group = "trust")]
    tls_ca: Option<PathBuf>,

    /// The name the server's certificate must carry, if not HOST.
    #[arg(long, value_name = "NAME", requires = "tls")]
    tls_name: Option<String>,

    /// Accept any certificate: the connection is encrypted, but to whom is not checked.
    #[arg(long, requires = "tls", group = "trust")]
    insecure: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on: 0.0.0.0 for every IPv4 interface, 127.0.0.1 for this
    /// machine only, :: or ::1 (or [::1]) for IPv6.
    #[arg(long, value_name = "HOST", default_value = "0.0.0.0")]
    host: String,

    /// Port to listen on; 0 picks a free one (the log says which).
    #[arg(long, short, value_name = "PORT", default_value_t = 25000)]
    port: u16,

    /// Bytes put in front of each reply; '' makes a plain echo (RFC 862).
    #[arg(long, default_value = "GOT:")]
    prefix: OsString,

    /// Put the prefix before every chunk a read returns (as the Python tutorial's server
    /// does), or before every line.
    #[arg(long, value_enum, default_value_t = Framing::Chunk)]
    framing: Framing,

    /// Leave out the per-connection log lines.
    #[arg(long, short)]
    quiet: bool,

    /// Close a connection whose client sends nothing for this many seconds (0: never).
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", default_value_t = 300.0, value_parser = seconds)]
    idle_timeout: f64,

    /// Serve at most N connections at once; more wait to be accepted. auto: as many as
    /// the fd limit allows, less 32.
    #[arg(long, value_name = "N", default_value = "auto", value_parser = connection_limit)]
    max_connections: ConnectionLimit,

    /// Serve at most N connections at once from one client address (the one a PROXY
    /// header names, with --proxy-protocol), across threads; a connection over it is
    /// closed at once, before any TLS handshake or HTTP request. No limit by default.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_source: Option<u32>,

    /// On SIGINT or SIGTERM, first go on accepting and serving for this many seconds, with
    /// /healthz (--admin) saying 503 so that load balancers send no one new; then stop.
    /// A second signal cuts the delay short.
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", default_value_t = 0.0, value_parser = seconds)]
    shutdown_delay: f64,

    /// Each connection's kernel send buffer, in bytes (or with KiB or MiB): what the
    /// kernel holds for a client that does not read. Without it, Linux grows a busy
    /// socket's buffer up to net.ipv4.tcp_wmem's maximum (4 MiB by default); the kernel
    /// counts twice the value for its bookkeeping, and caps it at net.core.wmem_max.
    #[arg(long, value_name = "BYTES", value_parser = send_buffer)]
    send_buffer: Option<usize>,

    /// Once stopping (after --shutdown-delay), let open connections go on for up to this
    /// many seconds.
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    shutdown_timeout: f64,

    /// Log a stats line (connections, bytes, messages per second) every SECS seconds.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = stats_interval)]
    stats: Option<f64>,

    /// Print one line per scheduler event: task spawned, run, parked in a waiting area,
    /// woken by the OS poll, finished.
    #[arg(long)]
    trace: bool,

    /// Behind a load balancer: every TCP connection begins with a PROXY protocol header
    /// (v1 or v2, as HAProxy's send-proxy sends), which names the client. A connection
    /// without one is refused.
    #[arg(long)]
    proxy_protocol: bool,

    /// Speak TLS on the TCP port, with this certificate chain (PEM, the server's own
    /// certificate first).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// With TLS: let a client go that has not finished its handshake in this many
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = coop_echo::tls::HANDSHAKE_TIME.as_secs_f64(),
          requires = "tls_cert", value_parser = positive_seconds)]
    tls_handshake_timeout: f64,

    /// Also answer UDP datagrams on the same port (prefix + datagram, one reply each).
    #[arg(long)]
    udp: bool,

    /// UDP replies per second to each source address, at most (0: no limit). The limit
    /// keeps the server from being used to flood a forged source.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        requires = "udp",
        allow_negative_numbers = true
    )]
    udp_rate: u32,

    /// Also serve the echo on a Unix socket at PATH (on serving thread 0; no PROXY
    /// header, no TLS). The file is removed at exit; a stale one left by a crashed run is
    /// replaced, and one a live server listens on is an error.
    #[arg(long, value_name = "PATH")]
    unix: Option<std::path::PathBuf>,

    /// Serve on N threads, each with its own runtime and listener on the port (the kernel
    /// spreads the clients); 0: one per available core. --max-connections is a total.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    threads: usize,

    /// Pin serving thread i to the i-th CPU this process may run on (with --threads),
    /// so that its caches and its sockets' kernel work stay on one core.
    #[arg(long)]
    pin_threads: bool,

    /// Serve metrics (Prometheus text) at http://ADDR/metrics, and health at /healthz.
    /// ADDR is HOST:PORT, or a port on 127.0.0.1.
    #[arg(long, value_name = "ADDR", value_parser = admin_address)]
    admin: Option<SocketAddr>,

    /// Allow --admin on an address other than loopback.
    #[arg(long, requires = "admin")]
    admin_public: bool,

    /// Also serve HTTP/1.1, HTTP/2 and WebSocket echo at ADDR (HOST:PORT, or a port on
    /// 127.0.0.1; 0.0.0.0:8080 for every interface): /echo sends the body back, a
    /// WebSocket echoes each message, any other path describes the request in JSON. With
    /// --tls-cert it speaks HTTPS and WSS; with --proxy-protocol it expects the header.
    #[arg(long, value_name = "ADDR", value_parser = admin_address)]
    http: Option<SocketAddr>,

    /// The name --http's descriptions give for this instance, to tell which answered
    /// behind a load balancer.
    ///
    /// [default: the host name]
    #[arg(long, value_name = "NAME", requires = "http")]
    instance: Option<String>,

    /// The largest WebSocket message (and frame) --http takes; a larger one is closed with
    /// code 1009. Bytes, or with KiB or MiB.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", requires = "http",
          value_parser = message_size)]
    ws_max_message: usize,

    /// Misbehave on purpose (repeatable): KIND[=VALUE][@SHARE]. On the TCP port (plain
    /// and TLS) and --http's WebSockets: delay=50ms (or 20ms..80ms: each reply held that
    /// long), throttle=10KiB/s, close-after=BYTES (FIN), reset-after=BYTES (RST; 0: at
    /// accept), stall-after=BYTES (neither read nor answer). On UDP: drop=5%,
    /// duplicate=5%, delay=... @SHARE (e.g. @10%) picks that share of connections, drawn
    /// at accept. With --admin, PUT /faults replaces them live.
    #[arg(long, value_name = "SPEC")]
    fault: Vec<coop_echo::fault::Spec>,

    /// With --http: what a request whose query names none of the fault parameters gets,
    /// as a query (e.g. 'delay=100ms&status=503:10'): delay, status (CODE or CODE:SHARE%),
    /// size, body, close, reset, header (Name:Value), content-type.
    #[arg(long, value_name = "QUERY", requires = "http", value_parser = http_defaults)]
    http_defaults: Option<Arc<coop_echo::http::asked::Asked>>,

    /// Draw --fault's shares from N: the same N and the same order of connections give
    /// the same faults.
    #[arg(long, value_name = "N")]
    fault_seed: Option<u64>,
}

fn http_defaults(s: &str) -> Result<Arc<coop_echo::http::asked::Asked>, String> {
    match coop_echo::http::asked::Asked::from_query(s) {
        Ok(Some(asked)) => Ok(Arc::new(asked)),
        Ok(None) => Err(format!(
            "'{s}' names no parameter (delay, status, size, body, close, reset, header, content-type)"
        )),
        Err(why) => Err(why),
    }
}

fn send_buffer(s: &str) -> Result<usize, String> {
    match coop_echo::units::parse_size(s) {
        Ok(n) if (4096..=1 << 30).contains(&n) => Ok(n as usize),
        Ok(_) => Err(format!("'{s}': give 4KiB to 1GiB")),
        Err(e) => Err(e),
    }
}

fn message_size(s: &str) -> Result<usize, String> {
    match coop_echo::units::parse_size(s) {
        Ok(n) if (1..=1 << 30).contains(&n) => Ok(n as usize),
        Ok(_) => Err(format!("'{s}': give 1 byte to 1GiB")),
        Err(e) => Err(e),
    }
}

fn admin_address(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("'{s}' is not HOST:PORT or a port"))
}

/// `--max-connections`.
#[derive(Debug, Clone, Copy)]
enum ConnectionLimit {
    /// What the fd limit allows.
    Auto,
    At(usize),
}

fn connection_limit(s: &str) -> Result<ConnectionLimit, String> {
    if s == "auto" {
        return Ok(ConnectionLimit::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(ConnectionLimit::At(n)),
        _ => Err("give 1 or more connections, or auto (as many as the fd limit allows)".into()),
    }
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        // 0 means "never" where allowed; anything else below a millisecond is a typo.
        Ok(v) if v == 0.0 || (0.001..=1e9).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds (0, or 0.001 to 1e9)"
        )),
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match seconds(s) {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds (0.001 to 1e9)")),
    }
}

fn stats_interval(s: &str) -> Result<f64, String> {
    match seconds(s) {
        Ok(v) if v >= 0.1 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds, 0.1 or more")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::Serve(args)) => serve(args, Some("serve")),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Top(args)) => coop_echo::top::run(args.admin),
        Some(Command::Client(args)) => {
            let host = args.host.as_deref().unwrap_or("localhost");
            let target = match coop_echo::client::target(host, args.port) {
                Ok(target) => target,
                Err(e) => usage_error(Some("client"), clap::error::ErrorKind::ValueValidation, e),
            };
            let tls = match client_tls(&args, &target) {
                Ok(tls) => tls,
                Err(e) => return service::fail(format_args!("{e}")),
            };
            coop_echo::client::run(&target, args.send_proxy, tls)
        }
        None => serve(cli.serve, None),
    }
}

/// The client's TLS settings, from `--tls`, `--tls-ca`, `--tls-name` and `--insecure`.
fn client_tls(args: &ClientArgs, target: &str) -> Result<Option<ClientTls>, String> {
    if !args.tls {
        return Ok(None);
    }
    let tls = ClientTls::new(args.tls_ca.as_deref(), args.tls_name.as_deref(), target)?;
    if args.insecure {
        eprintln!(
            "coop-echo: WARNING: --insecure: the server's certificate is not checked; \
             anyone between here and the server can read and change this connection"
        );
    }
    Ok(Some(tls))
}

/// Exits 2 with clap's `error: ...` message, as for any other bad argument, and the usage
/// of the command it was given to (`subcommand`, or the program's own).
fn usage_error(
    subcommand: Option<&str>,
    kind: clap::error::ErrorKind,
    message: impl std::fmt::Display,
) -> ! {
    use clap::CommandFactory;
    let mut command = Cli::command();
    // Built first, so that a subcommand's usage line begins with the program's name.
    command.build();
    if let Some(sub) = subcommand.and_then(|name| command.find_subcommand_mut(name)) {
        sub.error(kind, message).exit()
    }
    command.error(kind, message).exit()
}

/// Log lines go to stderr; `RUST_LOG` picks what is shown (default: `info`). A value
/// that is not a filter gets the default and one warning: a typo must not silence the
/// server.
fn init_logging() {
    let asked = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if value.trim().is_empty() => None,
        Ok(value) => Some(log_filter(&value).map_err(|why| (value, why))),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(value)) => Some(Err((
            value.to_string_lossy().into_owned(),
            "not UTF-8".to_string(),
        ))),
    };
    let (filter, refused) = match asked {
        Some(Ok(filter)) => (filter, None),
        Some(Err(refused)) => (EnvFilter::new("info"), Some(refused)),
        None => (EnvFilter::new("info"), None),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some((value, why)) = refused {
        tracing::warn!("RUST_LOG={value:?} is not a log filter ({why}); logging at info");
    }
}

/// `RUST_LOG`'s value as a filter, or why it is not one. Besides what `EnvFilter` cannot
/// parse, a bare word that is not a level is refused unless it names this program's
/// own targets: `EnvFilter` takes it for a target, and enables that target alone, so a
/// mistyped level (`infoo`) would show nothing at all.
fn log_filter(value: &str) -> Result<EnvFilter, String> {
    use tracing_subscriber::filter::{Directive, LevelFilter};
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Err(e) = part.parse::<Directive>() {
            return Err(format!("{part:?}: {e}"));
        }
        let bare = !part.contains(['=', '[']);
        let ours = ["coop", "coop_echo"]
            .iter()
            .any(|crate_name| part == *crate_name || part.starts_with(&format!("{crate_name}::")));
        if bare && !ours && part.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "{part:?} is not a level (trace, debug, info, warn, error, off), nor a target of this program's"
            ));
        }
    }
    EnvFilter::builder().parse(value).map_err(|e| e.to_string())
}

/// `subcommand`: how the options were given, `serve` or none (the program's default).
fn serve(mut args: ServeArgs, subcommand: Option<&str>) -> ExitCode {
    if let Some(admin) = args
        .admin
        .filter(|a| !a.ip().is_loopback() && !args.admin_public)
    {
        usage_error(
            subcommand,
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "--admin {admin} is not a loopback address: add --admin-public to serve metrics beyond this machine"
            ),
        );
    }
    // A bare port is loopback: the flag would promise a reach it does not have.
    if let Some(admin) = args
        .admin
        .filter(|a| a.ip().is_loopback() && args.admin_public)
    {
        usage_error(
            subcommand,
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "--admin-public with --admin {admin} (a loopback address): give the address to serve on, e.g. --admin 0.0.0.0:{}",
                admin.port()
            ),
        );
    }
    // `[::1]` is how people write an IPv6 address next to a port; the resolver wants `::1`.
    if let Some(bare) = args
        .host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
    {
        args.host = bare.to_string();
    }
    let address = if args.host.contains(':') {
        format!("[{}]:{}", args.host, args.port)
    } else {
        format!("{}:{}", args.host, args.port)
    };
    let some_secs = |s: f64| (s > 0.0).then(|| Duration::from_secs_f64(s));
    let handshake_time = Duration::from_secs_f64(args.tls_handshake_timeout);
    let server_config = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match coop_echo::tls::server_config(cert, key) {
            Ok(config) => Some(config),
            Err(e) => return service::fail(format_args!("{e}")),
        },
        _ => None,
    };
    let http = args.http.map(|_| {
        let host = coop_echo::http::host_name();
        coop_echo::http::Config {
            tls: server_config
                .as_deref()
                .map(|config| coop_echo::http::Config::tls_from(config, handshake_time)),
            ws_max_message: args.ws_max_message,
            instance: Arc::from(args.instance.clone().unwrap_or_else(|| host.clone())),
            host: Arc::from(host),
            // Set by the service, once it has bound.
            listening: Arc::new([]),
            defaults: args.http_defaults.clone(),
        }
    });
    let tls = server_config.map(|config| coop_echo::tls_echo::Tls {
        config,
        handshake_time,
    });
    service::run(Service {
        address,
        host: args.host,
        port: args.port,
        pin_threads: args.pin_threads,
        threads: match args.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
        config: worker::Config {
            prefix: Arc::from(args.prefix.into_encoded_bytes()),
            framing: args.framing,
            quiet: args.quiet,
            idle_timeout: some_secs(args.idle_timeout),
            proxy_protocol: args.proxy_protocol,
            tls,
            // One table, which every thread's copy of the config shares.
            per_source: args
                .max_connections_per_source
                .map(coop_echo::per_source::PerSource::new),
            // Set by the service, from the two below.
            limit: worker::Limit::Alone(usize::MAX),
            trace: None,
            udp_rate: args.udp.then_some(args.udp_rate),
            hurry: Arc::default(),
            http,
            // An admin address may set faults later: the accept loops must look.
            faults: (!args.fault.is_empty() || args.admin.is_some()).then(|| {
                Arc::new(coop_echo::fault::Table::new(
                    args.fault.clone(),
                    args.fault_seed,
                ))
            }),
        },
        unix: args.unix,
        max_connections: match args.max_connections {
            ConnectionLimit::Auto => None,
            ConnectionLimit::At(n) => Some(n),
        },
        shutdown_delay: Duration::from_secs_f64(args.shutdown_delay),
        send_buffer: args.send_buffer,
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        stats: args.stats.and_then(some_secs),
        trace: args.trace,
        admin: args.admin.map(|addr| (addr, args.admin_public)),
        http: args.http,
    })
}
