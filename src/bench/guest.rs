//! The guest `skiff bench` starts unless told another: a hello world small
//! enough to be written here, so the command needs no file, and the same
//! guest every baseline runs.

/// A wasip1 module that writes one line to stdout and returns: the
/// smallest real work a task does (as `busybox echo` is a container's).
const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello from skiff bench\n")
  (func (export "_start")
    ;; one iovec at 0: the 23 bytes at 16
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 23))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// The built-in hello module's bytes.
pub fn hello() -> anyhow::Result<Vec<u8>> {
    wat::parse_str(HELLO_WAT).map_err(|e| anyhow::anyhow!("the built-in guest: {e}"))
}

/// A wasip1 module that says `sleeping` on stdout and then waits, doing
/// nothing, until its stdin closes — which is how skiff asks a task to
/// stop (before it is killed at the container's stopTimeout) — and exits
/// 0: a long-running task at rest, as most of a dense box's tasks are,
/// that stops when asked.
const SLEEPER_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "sleeping\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 9))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; read stdin into 64..128 until it ends (0 bytes) or fails
    (i32.store (i32.const 32) (i32.const 64))
    (i32.store (i32.const 36) (i32.const 64))
    (block $closed
      (loop $waiting
        (br_if $closed (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
        (br_if $closed (i32.eqz (i32.load (i32.const 40))))
        (br $waiting)))))
"#;

/// The built-in sleeper module's bytes.
pub fn sleeper() -> anyhow::Result<Vec<u8>> {
    wat::parse_str(SLEEPER_WAT).map_err(|e| anyhow::anyhow!("the built-in sleeper: {e}"))
}

/// `wasm` with a custom section naming `n` appended: the same program
/// under another digest, so nothing cached for one is found for another
/// (a cold start each). Custom sections may follow any section, in a
/// module and in a component alike.
pub fn distinct(wasm: &[u8], n: usize) -> Vec<u8> {
    let name = b"skiff-bench";
    let payload = n.to_string();
    let mut body = leb128(name.len() as u64);
    body.extend_from_slice(name);
    body.extend_from_slice(payload.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    out.extend(leb128(body.len() as u64));
    out.extend(body);
    out
}

fn leb128(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_copies_are_valid_and_differ() {
        let hello = hello().unwrap();
        let a = distinct(&hello, 1);
        let b = distinct(&hello, 300);
        assert_ne!(a, b);
        let engine = wasmtime::Engine::default();
        let sleeper = sleeper().unwrap();
        for wasm in [&hello, &a, &b, &sleeper] {
            wasmtime::Module::validate(&engine, wasm).unwrap();
        }
    }

    #[test]
    fn leb128_encodes_as_the_spec_says() {
        assert_eq!(leb128(0), [0]);
        assert_eq!(leb128(127), [0x7f]);
        assert_eq!(leb128(128), [0x80, 0x01]);
        assert_eq!(leb128(624_485), [0xe5, 0x8e, 0x26]);
    }
}
