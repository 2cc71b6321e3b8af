//! `mem-grow [--step-mib N] [--max-mib M] [--careful]`
//!
//! Allocates N MiB at a time (default 4) and touches every page, until M MiB
//! (default: forever) or until the allocator fails. A memory bomb.
//!
//! With `--careful` an allocation failure is noticed (`try_reserve`) and the
//! program reports `allocation failed at K MiB; linear memory L MiB` and
//! exits 0: a guest that handles running out of memory. Without it, Rust
//! aborts on allocation failure, which is a trap.

fn linear_memory_mib() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0) * 64 * 1024 / (1024 * 1024)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

fn main() {
    let mut step_mib: usize = 4;
    let mut max_mib: Option<usize> = None;
    let mut careful = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--careful" => careful = true,
            "--step-mib" => step_mib = args.next().and_then(|v| v.parse().ok()).unwrap_or(4),
            "--max-mib" => max_mib = args.next().and_then(|v| v.parse().ok()),
            other => {
                eprintln!("mem-grow: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    loop {
        if max_mib.is_some_and(|max| total + step_mib > max) {
            println!("reached {total} MiB; linear memory {} MiB", linear_memory_mib());
            return;
        }
        let bytes = step_mib * 1024 * 1024;
        let mut chunk: Vec<u8> = Vec::new();
        if careful {
            if chunk.try_reserve_exact(bytes).is_err() {
                println!(
                    "allocation failed at {total} MiB; linear memory {} MiB",
                    linear_memory_mib()
                );
                return;
            }
            chunk.resize(bytes, 1);
        } else {
            chunk = vec![1u8; bytes];
        }
        total += step_mib;
        held.push(chunk);
        println!("holding {total} MiB");
    }
}
