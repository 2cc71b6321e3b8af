//! Where wasmtime-wasi's filesystem departs from POSIX, put right.
//!
//! `rmdir("dir/")` removes `dir` in POSIX; wasmtime-wasi (through
//! cap-std's "open the parent, remove the leaf") takes the trailing slash
//! for a `.` leaf and answers EINVAL (bytecodealliance/wasmtime#8828 and
//! #11524; the wasi-testsuite's `remove_directory_trailing_slashes`). So a
//! WASI 0.2 directory removal's trailing slashes are dropped before
//! wasmtime-wasi sees the path. The rest of that test already holds:
//! `rmdir("file/")` is ENOTDIR; `unlink("file/")` is ENOTDIR and
//! `unlink("dir/")` EISDIR, and nothing is removed — `tests/all/sandbox.rs`
//! checks all of it.
//!
//! WASI preview 1 modules still get EINVAL for `rmdir("dir/")`:
//! wasmtime-wasi's preview 1 implementation is not public to call with a
//! shorter path, and calling its linked function from a shadowing one
//! needs a second fiber per call, which the pooling allocator does not
//! give a store.

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
