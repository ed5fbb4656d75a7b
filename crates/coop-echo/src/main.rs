//! `coop-echo`: the seed's echo server on the coop scheduler.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::rc::Rc;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use coop_echo::bench::{self, BenchArgs};
use coop_echo::echo::Framing;
use coop_echo::serve;

/// The seed's echo server: every chunk a client sends comes back with `GOT:` in front.
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
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,

    /// Port to listen on; 0 picks a free one (the log says which).
    #[arg(long, short, default_value_t = 25000)]
    port: u16,

    /// Bytes put in front of each reply; '' makes a plain echo (RFC 862).
    #[arg(long, default_value = "GOT:")]
    prefix: OsString,

    /// Prefix every chunk a read returns (as the seed does), or every line.
    #[arg(long, value_enum, default_value_t = Framing::Chunk)]
    framing: Framing,

    /// Leave out the per-connection log lines.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Bench(args)) => bench::run(args),
        None => serve(cli.serve),
    }
}

/// Log lines go to stderr; `RUST_LOG` picks what is shown (default: `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn serve(args: ServeArgs) -> ExitCode {
    let address = if args.host.contains(':') {
        format!("[{}]:{}", args.host, args.port)
    } else {
        format!("{}:{}", args.host, args.port)
    };
    let runtime = match coop::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format_args!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async {
        let listener = match coop::TcpListener::bind((args.host.as_str(), args.port)) {
            Ok(listener) => listener,
            Err(e) => return fail(format_args!("cannot listen on {address}: {e}")),
        };
        match listener.local_addr() {
            Ok(bound) => tracing::info!("Listening on {bound}"),
            Err(e) => return fail(format_args!("cannot listen on {address}: {e}")),
        }
        let settings = serve::Settings {
            prefix: Rc::from(args.prefix.into_encoded_bytes()),
            framing: args.framing,
            quiet: args.quiet,
        };
        serve::run(listener, settings).await;
        ExitCode::SUCCESS
    })
}

/// One line on stderr, exit status 1.
fn fail(message: std::fmt::Arguments<'_>) -> ExitCode {
    eprintln!("coop-echo: {message}");
    ExitCode::FAILURE
}
