//! Loose objects written and read by the controller itself, beside libgit2: an object's
//! file under `objects/xx/…`, a zlib stream of `<kind> <size>\0` and the content.
//!
//! [`write_stored`] writes that stream *stored* (deflate's uncompressed blocks): still a
//! zlib stream every git reads, at the cost of a memory copy where libgit2's loose writer
//! always deflates (at level 0 it writes no zlib stream at all). A workspace's new trees
//! are written so (see [`super::tree_write`]): a product's root tree of a few thousand
//! entries was deflated once and inflated three or four times a task, about 0.7 ms of each
//! task at 2,000 files. A repository's `git gc` packs such objects with deltas and
//! compression like any other.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};

use super::GitopsError;

/// The most bytes one stored deflate block holds.
const MAX_STORED_BLOCK: usize = 0xffff;

/// The file of object `id` in the `objects` folder.
pub(super) fn path(objects: &Path, id: Oid) -> PathBuf {
    let hex = id.to_string();
    objects.join(&hex[..2]).join(&hex[2..])
}

/// A loose object's inflated bytes split into its kind and content (`<kind> <size>\0`).
pub(super) fn parse(plain: &[u8]) -> Option<(ObjectType, &[u8])> {
    let nul = plain.iter().position(|b| *b == 0)?;
    let header = std::str::from_utf8(&plain[..nul]).ok()?;
    let (kind, size) = header.split_once(' ')?;
    let content = &plain[nul + 1..];
    let kind = match kind {
        "blob" => ObjectType::Blob,
        "tree" => ObjectType::Tree,
        "commit" => ObjectType::Commit,
        "tag" => ObjectType::Tag,
        _ => return None,
    };
    (size.parse::<usize>().ok()? == content.len()).then_some((kind, content))
}

/// Writes the compressed bytes of object `id` into the `objects` folder, unless it is
/// there: under a temporary name first, so the name appears only with the whole object.
pub(super) fn put(objects: &Path, id: Oid, bytes: &[u8]) -> Result<(), GitopsError> {
    let path = path(objects, id);
    if std::fs::symlink_metadata(&path).is_ok() {
        return Ok(());
    }
    let folder = path.parent().unwrap_or(objects);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GitopsError::Io { path, source }
    };
    std::fs::create_dir_all(folder).map_err(io(folder))?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // git's prune removes temporary objects (`tmp_obj_*`) a killed copy leaves.
    let temporary = folder.join(format!("tmp_obj_proto{}_{n}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes));
    if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, &path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(&path)(e));
    }
    Ok(())
}

/// Writes object `id`, of `kind` and `content`, into the `objects` folder as a stored zlib
/// stream, unless it is there. `id` must be the object's name: the caller hashed it.
pub(super) fn write_stored(
    objects: &Path,
    id: Oid,
    kind: ObjectType,
    content: &[u8],
) -> Result<(), GitopsError> {
    let mut plain = format!("{} {}\0", kind.str(), content.len()).into_bytes();
    plain.extend_from_slice(content);
    put(objects, id, &stored_zlib(&plain))
}

/// `plain` as a zlib stream of stored deflate blocks (RFC 1950, and RFC 1951's block
/// type 0).
fn stored_zlib(plain: &[u8]) -> Vec<u8> {
    let blocks = plain.len().div_ceil(MAX_STORED_BLOCK).max(1);
    let mut out = Vec::with_capacity(2 + plain.len() + 5 * blocks + 4);
    // Deflate with a 32 KiB window, "fastest"; 0x7801 is a multiple of 31, as the header's
    // check bits require.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = plain.chunks(MAX_STORED_BLOCK).peekable();
    if chunks.peek().is_none() {
        // Nothing to store: one empty final block.
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&adler2::adler32_slice(plain).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(bytes: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(bytes), &mut plain).unwrap();
        plain
    }

    #[test]
    fn stored_streams_inflate_to_what_went_in_across_block_boundaries() {
        let mut rng = crate::test_rng::Rng(0x5eed);
        for size in [0usize, 1, 5_552, 65_534, 65_535, 65_536, 131_070, 200_000] {
            let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
            let stream = stored_zlib(&data);
            assert_eq!(inflate(&stream), data, "{size} bytes");
            // Every byte but the framing is the data itself.
            assert_eq!(stream.len(), size + 6 + 5 * size.div_ceil(65_535).max(1));
        }
    }

    #[test]
    fn git_and_libgit2_read_a_stored_object_and_fsck_finds_it_sound() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let blob = repo.blob(b"hello\n").unwrap();
        let mut tree = repo.treebuilder(None).unwrap();
        for i in 0..3_000 {
            tree.insert(format!("file-{i:05}.txt"), blob, 0o100_644)
                .unwrap();
        }
        // The tree's bytes and name from libgit2, written again by hand, stored.
        let id = tree.write().unwrap();
        let content = repo.odb().unwrap().read(id).unwrap().data().to_vec();
        let objects = dir.path().join(".git/objects");
        std::fs::remove_file(path(&objects, id)).unwrap();
        write_stored(&objects, id, ObjectType::Tree, &content).unwrap();
        assert!(std::fs::metadata(path(&objects, id)).unwrap().len() > content.len() as u64);

        let again = git2::Repository::open(dir.path()).unwrap();
        assert_eq!(again.find_tree(id).unwrap().len(), 3_000);
        let git = |args: &[&str]| crate::gitops::test_git::git(dir.path(), args);
        let hex = id.to_string();
        assert_eq!(git(&["cat-file", "-t", &hex]), "tree");
        assert_eq!(git(&["ls-tree", &hex]).lines().count(), 3_000);
        let commit = git(&["commit-tree", &hex, "-m", "stored"]);
        git(&["update-ref", "refs/heads/main", &commit]);
        git(&["fsck", "--strict", "--no-dangling"]);
    }
}
