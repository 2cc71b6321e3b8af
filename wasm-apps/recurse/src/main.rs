//! Recurses without bound: the runtime must turn the stack overflow into a
//! clean trap, never a crash of the host.

#[allow(unconditional_recursion)]
fn depth(n: u64) -> u64 {
    // black_box stops the optimiser from turning this into a loop.
    std::hint::black_box(depth(std::hint::black_box(n + 1))) + 1
}

fn main() {
    println!("recursing");
    println!("{}", depth(0));
}
