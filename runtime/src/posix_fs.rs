//! Where wasmtime-wasi's filesystem departs from POSIX, put right.
//!
//! `rmdir("dir/")` removes `dir` in POSIX; wasmtime-wasi (through
//! cap-std's "open the parent, remove the leaf") takes the trailing slash
//! for a `.` leaf and answers EINVAL (bytecodealliance/wasmtime#8828 and
//! #11524; the wasi-testsuite's `remove_directory_trailing_slashes`). So a
//! directory removal's trailing slashes are dropped before wasmtime-wasi
//! sees the path, for WASI 0.2 and preview 1 (and `wasi_unstable`) alike. The rest of that test already holds:
//! `rmdir("file/")` is ENOTDIR; `unlink("file/")` is ENOTDIR and
//! `unlink("dir/")` EISDIR, and nothing is removed — `tests/all/sandbox.rs`
//! checks all of it.

use crate::sandbox::Host;
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{Descriptor, ErrorCode, HostDescriptor};

/// The interface the component linker has wasmtime-wasi's filesystem
/// under (its WIT package's version).
const FS_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// The path a directory removal is given: `path` without its trailing
/// slashes, unless nothing else would be left.
pub(crate) fn rmdir_path(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { path } else { trimmed }
}

/// Preview 1 and `wasi_unstable`: `path_remove_directory` over
/// wasmtime-wasi's, which is called with the path's length short of its
/// trailing slashes (wasmtime-wasi's generated entry point, so errors
/// become errnos exactly as there).
pub(crate) fn fix_module_linker(
    linker: &mut wasmtime::Linker<Host>,
    unstable: bool,
) -> wasmtime::Result<()> {
    /// A shadowing `path_remove_directory` calling `$call`.
    macro_rules! shadow {
        ($module:literal, $call:path) => {
            linker.func_wrap_async(
                $module,
                "path_remove_directory",
                |mut caller: wasmtime::Caller<'_, Host>, (fd, ptr, len): (i32, i32, i32)| {
                    Box::new(async move {
                        let memory = guest_memory(&mut caller)?;
                        let (bytes, host) = memory.data_and_store_mut(&mut caller);
                        let len = trimmed_len(bytes, ptr, len);
                        let mut memory = wiggle::GuestMemory::Unshared(bytes);
                        $call(host.p1(), &mut memory, fd, ptr, len).await
                    })
                },
            )
        };
    }
    linker.allow_shadowing(true);
    let linked = shadow!(
        "wasi_snapshot_preview1",
        wasmtime_wasi::p1::wasi_snapshot_preview1::path_remove_directory
    )
    .map(|_| ());
    let linked = linked.and_then(|()| {
        if !unstable {
            return Ok(());
        }
        shadow!(
            "wasi_unstable",
            wasmtime_wasi::p0::wasi_unstable::path_remove_directory
        )
        .map(|_| ())
    });
    linker.allow_shadowing(false);
    linked
}

/// The guest's exported memory, where its path arguments are.
fn guest_memory(caller: &mut wasmtime::Caller<'_, Host>) -> wasmtime::Result<wasmtime::Memory> {
    caller
        .get_export("memory")
        .and_then(wasmtime::Extern::into_memory)
        .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))
}

/// The length of the guest's path at `ptr` without its trailing slashes
/// (unchanged if it cannot be read: wasmtime-wasi then says why).
fn trimmed_len(memory: &[u8], ptr: i32, len: i32) -> i32 {
    let (Ok(start), Ok(n)) = (usize::try_from(ptr as u32), usize::try_from(len as u32)) else {
        return len;
    };
    match memory
        .get(start..start.saturating_add(n))
        .and_then(|b| std::str::from_utf8(b).ok())
    {
        Some(path) => rmdir_path(path).len() as i32,
        None => len,
    }
}

/// WASI 0.2: `descriptor.remove-directory-at`, over wasmtime-wasi's, with
/// the trailing slashes dropped.
pub(crate) fn fix_component_linker(
    linker: &mut wasmtime::component::Linker<Host>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FS_TYPES)?;
    let linked = types.func_wrap_async(
        "[method]descriptor.remove-directory-at",
        |mut store: wasmtime::StoreContextMut<'_, Host>,
         (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let path = rmdir_path(&path).to_string();
                let mut fs = store.data_mut().filesystem();
                match HostDescriptor::remove_directory_at(&mut fs, fd, path).await {
                    Ok(()) => Ok((Ok::<(), ErrorCode>(()),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    );
    linker.allow_shadowing(false);
    linked
}

#[cfg(test)]
mod tests {
    use super::rmdir_path;

    #[test]
    fn only_trailing_slashes_go_and_never_the_whole_path() {
        assert_eq!(rmdir_path("dir/"), "dir");
        assert_eq!(rmdir_path("a/dir//"), "a/dir");
        assert_eq!(rmdir_path("dir"), "dir");
        assert_eq!(rmdir_path("dir/."), "dir/.");
        assert_eq!(rmdir_path("/"), "/");
        assert_eq!(rmdir_path(""), "");
    }
}
