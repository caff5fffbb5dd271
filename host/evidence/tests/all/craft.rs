//! Bundles taken apart and put back together header by header, hostile headers included,
//! and an allocation counter: what every test of a bundle's strict reading uses.

use runwarden_evidence::{VerifyingKey, verify_bundle};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Read;
use tar::EntryType;

/// Counts the bytes each thread allocates, so a test can show that refusing a bundle did
/// not allocate what its headers claim.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes as u64)));
}

// SAFETY: every call is passed on to the system allocator unchanged; only a thread-local
// counter (const-initialised, so it never allocates) is updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's obligations are the same as System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes this thread allocates while `f` runs.
pub(super) fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

/// A bundle's members, in archive order: name and bytes.
pub(super) type Members = Vec<(String, Vec<u8>)>;

pub(super) fn members(bytes: &[u8]) -> Members {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

pub(super) fn get<'a>(m: &'a mut Members, name: &str) -> &'a mut Vec<u8> {
    &mut m.iter_mut().find(|(n, _)| n == name).unwrap().1
}

/// Where member `name` is.
pub(super) fn at(m: &[(String, Vec<u8>)], name: &str) -> usize {
    m.iter()
        .position(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no member {name}"))
}

/// One raw tar header and its data: any name, any type, any size claimed, no checks.
pub(super) fn raw_member(out: &mut Vec<u8>, name: &[u8], ty: EntryType, claimed: u64, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_entry_type(ty);
    h.set_size(claimed);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// Tar entries that are not regular files, and what a refusal calls them.
pub(super) const NOT_REGULAR: [(EntryType, &str); 11] = [
    (EntryType::Symlink, "a symbolic link"),
    (EntryType::Link, "a hard link"),
    (EntryType::Char, "a device"),
    (EntryType::Block, "a device"),
    (EntryType::Fifo, "a FIFO"),
    (EntryType::Directory, "a directory"),
    (EntryType::XHeader, "a pax extended header"),
    (EntryType::XGlobalHeader, "a pax extended header"),
    (EntryType::GNULongName, "a GNU long-name header"),
    (EntryType::GNULongLink, "a GNU long-name header"),
    (EntryType::Continuous, "a tar entry of type '7'"),
];

/// Member names no bundle holds whatever it is, as a refusal shows them, and why.
pub(super) const ODD_NAMES: [(&[u8], &str, &str); 10] = [
    (
        b"../checkpoint.txt",
        "../checkpoint.txt",
        "path leaves the bundle",
    ),
    (
        b"records/../seal.dsse.json",
        "records/../seal.dsse.json",
        "path leaves the bundle",
    ),
    (b"/checkpoint.txt", "/checkpoint.txt", "absolute path"),
    (b"C:checkpoint.txt", "C:checkpoint.txt", "absolute path"),
    (
        b"keys\\00000000.pub",
        "keys\\00000000.pub",
        "its name holds a backslash",
    ),
    (
        b"checkpoint.txt\x1b[1A\x1b[2K",
        "checkpoint.txt\\x1b[1A\\x1b[2K",
        "its name holds control characters",
    ),
    (
        "\u{202e}txt.tniopkcehc".as_bytes(),
        "\\u{202e}txt.tniopkcehc",
        "its name holds control characters",
    ),
    (
        b"checkpoint\ttxt",
        "checkpoint\\x09txt",
        "its name holds control characters",
    ),
    (
        b"records/\xff.jsonl",
        "records/\u{fffd}.jsonl",
        "its name is not UTF-8",
    ),
    (b"", "", "it has no name"),
];

/// A GNU sparse member `name`: 512 bytes stored, a map that expands it to `real` bytes of
/// zeros (and those 512).
pub(super) fn sparse_member(out: &mut Vec<u8>, name: &[u8], real: u64) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(512);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(real);
    gnu.sparse[0].set_offset(real - 512);
    gnu.sparse[0].set_length(512);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&[b'x'; 512]);
}

/// The members as regular files, without the archive's end.
fn regular(m: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in m {
        raw_member(
            &mut out,
            name.as_bytes(),
            EntryType::Regular,
            data.len() as u64,
            data,
        );
    }
    out
}

pub(super) fn tar_of(m: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = regular(m);
    out.extend_from_slice(&[0; 1024]);
    out
}

/// The members before `at`, then whatever `craft` appends (a hostile header), then the
/// members from `at` on.
pub(super) fn spliced(
    m: &[(String, Vec<u8>)],
    at: usize,
    craft: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = regular(&m[..at]);
    craft(&mut out);
    out.extend_from_slice(&tar_of(&m[at..]));
    out
}

/// The message verification fails with.
#[track_caller]
pub(super) fn refused(bytes: &[u8], key: &VerifyingKey) -> String {
    match verify_bundle(bytes, std::slice::from_ref(key), None) {
        Ok(v) => panic!("verified, but must be refused: {v}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
pub(super) fn assert_refused(bytes: &[u8], key: &VerifyingKey, expect: &str) {
    let msg = refused(bytes, key);
    assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
}
