//! `creditguard-sim`: long seeded simulations of Stripe worlds against the money oracle (the
//! same run as `cargo test --test simulation`, see tests/simulation/main.rs), for as many
//! seeds and events as you give it. It prints each seed's world, then the events per second and
//! the checks made. A failure prints its seed and the shortest world it shrank to, and exits 1.
//!
//! ```sh
//! cargo run --release --example creditguard-sim -- --seeds 1-20 --events 2000 --jobs 4
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
    /// Worlds run at once, each on its own thread with its own service, database and fake
    /// Stripe (a world waits on its fake Stripe's hangs and on commits, not on the CPU).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let seeds = match simulation::parse_seeds(&args.seeds) {
        Ok(seeds) => seeds,
        Err(problem) => {
            eprintln!("creditguard-sim: --seeds {}: {problem}", args.seeds);
            return std::process::ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let jobs = args.jobs.clamp(1, seeds.len().max(1));
    // Seed i goes to thread i % jobs: each thread runs its worlds one after another, each
    // world as deterministic as when run alone.
    let threads: Vec<_> = (0..jobs)
        .map(|j| {
            let mine: Vec<u64> = seeds.iter().copied().skip(j).step_by(jobs).collect();
            let events = args.events;
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime")
                    .block_on(simulation::simulate(&mine, events))
            })
        })
        .collect();
    let mut totals = simulation::Totals::default();
    let mut failed = false;
    for thread in threads {
        match thread.join() {
            Ok(Ok(done)) => totals.add(done),
            Ok(Err(failure)) => {
                eprintln!("{failure}");
                failed = true;
            }
            Err(_) => {
                eprintln!("creditguard-sim: a world panicked (see above)");
                failed = true;
            }
        }
    }
    if failed {
        return std::process::ExitCode::FAILURE;
    }
    println!("{}", totals.summary(started.elapsed()));
    std::process::ExitCode::SUCCESS
}
