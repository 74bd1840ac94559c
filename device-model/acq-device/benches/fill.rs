//! `cargo bench -p acq-device`: the model's fill rate into guest RAM next to memset and
//! memcpy of the same buffers, measured in the same run (see `acq_device::bench`).

fn main() {
    let args = acq_device::bench::BenchArgs::default();
    match acq_device::bench::run(&args) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("fill benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
