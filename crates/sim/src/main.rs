//! `tandem-sim`: runs the deterministic simulation (see docs/simulation.md).

fn main() {
    std::process::exit(tandem_sim::run(std::env::args().skip(1)));
}
