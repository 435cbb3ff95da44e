//! `creditguard-sim`: long seeded simulations of Stripe worlds against the money oracle (the
//! same run as `cargo test --test simulation`, see tests/simulation/main.rs), for as many
//! seeds and events as you give it. It prints each seed's world, then the events per second and
//! the checks made. A failure prints its seed and the shortest world it shrank to, and exits 1.
//!
//! ```sh
//! cargo run --release --example creditguard-sim -- --seeds 1-20 --events 2000
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --release --example creditguard-sim -- --seed 7 --events 5000
//! ```
//!
//! An example rather than a `[[bin]]`: it drives the service with the test suite's parts (the
//! fake Stripe on wiremock, the test clock), which are dev-dependencies.

#[path = "../tests/simulation/main.rs"]
#[allow(dead_code)]
mod simulation;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "creditguard-sim",
    about = "Seeded Stripe worlds checked against the money oracle"
)]
struct Args {
    /// Seeds: `7`, `1-20`, or a list `1,5,9-12`.
    #[arg(long, alias = "seed", default_value = "1")]
    seeds: String,
    /// Happenings per world (payments, spending, refunds, disputes…); Stripe's deliveries of
    /// them are about twice as many.
    #[arg(long, default_value_t = 1000)]
    events: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let seeds = match simulation::parse_seeds(&args.seeds) {
        Ok(seeds) => seeds,
        Err(problem) => {
            eprintln!("creditguard-sim: --seeds {}: {problem}", args.seeds);
            return std::process::ExitCode::from(2);
        }
    };
    match simulation::simulate(&seeds, args.events).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            std::process::ExitCode::FAILURE
        }
    }
}
