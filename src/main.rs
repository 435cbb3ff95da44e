use clap::Parser;
use creditguard::cli::{run, Cli};
use creditguard::{telemetry, Settings};

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    // Before anything uses OpenSSL (the OTLP exporter, libpq): see `init_openssl`.
    creditguard::db::connection::init_openssl();
    let cli = Cli::parse();
    let guard = match telemetry::init() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: telemetry: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match Settings::load() {
        Ok(settings) => run(cli, settings).await,
        Err(e) => Err(e.into()),
    };
    guard.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
