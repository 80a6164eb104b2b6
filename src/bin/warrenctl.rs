//! The `warrenctl` binary: rabbitmqctl's commands for a local warren (see
//! `warren::ctl`).

fn main() {
    std::process::exit(warren::ctl::main(std::env::args().skip(1)));
}
