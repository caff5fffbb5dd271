//! Embedding a compiled rule set into the rule engine component.
//!
//! The engine's core module holds a slot — a 16-byte magic followed by a little-endian
//! u32 address and length, both zero — in one of its data segments. Embedding:
//! 1. raises the module's memory minimum by enough pages for the rule set, which lands
//!    at the old end of the initial memory (the allocator's initial heap ends there and
//!    it only ever grows memory beyond the current size, so nothing else writes there);
//! 2. appends an active data segment holding the rule set at that address (and bumps
//!    the data count);
//! 3. writes the address and length into the slot.
//!
//! Every other byte of the component is kept: sections are spliced, not re-encoded.

const MAGIC: &[u8; 16] = b"runwarden-rules1";
const PAGE: u64 = 65_536;

/// Why a component could not take a rule set.
#[derive(Debug, thiserror::Error)]
#[error("rule engine component: {0}")]
pub struct EmbedError(String);

fn err(m: impl Into<String>) -> EmbedError {
    EmbedError(m.into())
}

fn read_leb(bytes: &[u8], at: &mut usize) -> Result<u64, EmbedError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or_else(|| err("truncated LEB128"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(err("LEB128 too long"))
}

fn leb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn sleb(mut v: i64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0);
        out.push(if done { b } else { b | 0x80 });
        if done {
            return;
        }
    }
}

/// The sections after an 8-byte header: (id, payload range).
fn sections(bytes: &[u8]) -> Result<Vec<(u8, std::ops::Range<usize>)>, EmbedError> {
    let mut at = 8;
    let mut out = Vec::new();
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let len = read_leb(bytes, &mut at)? as usize;
        let end = at
            .checked_add(len)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| err("section runs past the end"))?;
        out.push((id, at..end));
        at = end;
    }
    Ok(out)
}

fn push_section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Whether `engine` is a bare engine (holds the slot, nothing embedded yet).
pub fn is_bare_engine(engine: &[u8]) -> bool {
    find_slot(engine).is_some_and(|at| engine[at + 16..at + 24] == [0; 8])
}

fn find_slot(bytes: &[u8]) -> Option<usize> {
    let mut hits = bytes
        .windows(MAGIC.len())
        .enumerate()
        .filter(|(_, w)| w == MAGIC);
    let (at, _) = hits.next()?;
    hits.next()
        .is_none()
        .then_some(at)
        .filter(|at| at + 24 <= bytes.len())
}

/// A copy of the engine component with `rules` embedded.
pub fn embed(engine: &[u8], rules: &[u8]) -> Result<Vec<u8>, EmbedError> {
    if !engine.starts_with(b"\0asm") || engine.get(6..8) != Some(&[1, 0]) {
        return Err(err("not a WebAssembly component"));
    }
    if !is_bare_engine(engine) {
        return Err(err(
            "no empty rule slot: this is not the runwarden rule engine, or it already holds a rule set",
        ));
    }
    let mut out = engine[..8].to_vec();
    let mut done = false;
    for (id, range) in sections(engine)? {
        let payload = &engine[range];
        // Core module sections (id 1) are whole modules; only the engine's holds the slot.
        if id == 1 && !done && find_slot(payload).is_some() {
            let module = embed_in_module(payload, rules)?;
            push_section(1, &module, &mut out);
            done = true;
        } else {
            push_section(id, payload, &mut out);
        }
    }
    if !done {
        return Err(err("the rule slot is not inside a core module"));
    }
    Ok(out)
}

fn embed_in_module(module: &[u8], rules: &[u8]) -> Result<Vec<u8>, EmbedError> {
    if !module.starts_with(b"\0asm\x01\0\0\0") {
        return Err(err("the slot's module is not a core module"));
    }
    let secs = sections(module)?;
    let mem = secs
        .iter()
        .find(|(id, _)| *id == 5)
        .ok_or_else(|| err("the engine module defines no memory"))?;
    // Memory section: count, then limits { flags, min, max? }. Only memory 0 changes.
    let m = &module[mem.1.clone()];
    let mut at = 0;
    let count = read_leb(m, &mut at)?;
    if count < 1 {
        return Err(err("the engine module defines no memory"));
    }
    let flags = *m.get(at).ok_or_else(|| err("truncated memory section"))?;
    at += 1;
    if flags & !0x01 != 0 {
        return Err(err(format!(
            "memory 0 has flags {flags:#x} (shared or 64-bit): not supported"
        )));
    }
    let min = read_leb(m, &mut at)?;
    let max = if flags & 1 != 0 {
        Some(read_leb(m, &mut at)?)
    } else {
        None
    };
    let address = min * PAGE;
    let pages = (rules.len() as u64).div_ceil(PAGE).max(1);
    if address + pages * PAGE > u64::from(u32::MAX) {
        return Err(err("the rule set does not fit in a 32-bit memory"));
    }
    let mut new_mem = Vec::new();
    leb(count, &mut new_mem);
    new_mem.push(flags);
    leb(min + pages, &mut new_mem);
    if let Some(max) = max {
        leb(max.max(min + pages), &mut new_mem);
    }
    new_mem.extend_from_slice(&m[at..]);

    let mut out = module[..8].to_vec();
    let mut data_seen = false;
    for (id, range) in &secs {
        let payload = &module[range.clone()];
        match id {
            5 => push_section(5, &new_mem, &mut out),
            12 => {
                let mut at = 0;
                let n = read_leb(payload, &mut at)?;
                let mut p = Vec::new();
                leb(n + 1, &mut p);
                push_section(12, &p, &mut out);
            }
            11 => {
                data_seen = true;
                let mut at = 0;
                let n = read_leb(payload, &mut at)?;
                let mut p = Vec::new();
                leb(n + 1, &mut p);
                let mut segments = payload[at..].to_vec();
                let slot = find_slot(&segments)
                    .ok_or_else(|| err("the rule slot is not in a data segment"))?;
                segments[slot + 16..slot + 20].copy_from_slice(&(address as u32).to_le_bytes());
                segments[slot + 20..slot + 24].copy_from_slice(&(rules.len() as u32).to_le_bytes());
                p.extend_from_slice(&segments);
                // Active segment in memory 0 at `i32.const address`.
                p.push(0x00);
                p.push(0x41);
                sleb(address as i64, &mut p);
                p.push(0x0b);
                leb(rules.len() as u64, &mut p);
                p.extend_from_slice(rules);
                push_section(11, &p, &mut out);
            }
            _ => push_section(*id, payload, &mut out),
        }
    }
    if !data_seen {
        return Err(err("the engine module has no data section"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb_round_trips() {
        for v in [0u64, 1, 127, 128, 300, 65_536, u32::MAX as u64] {
            let mut b = Vec::new();
            leb(v, &mut b);
            let mut at = 0;
            assert_eq!(read_leb(&b, &mut at).unwrap(), v);
            assert_eq!(at, b.len());
        }
        let mut b = Vec::new();
        sleb(1 << 20, &mut b);
        assert_eq!(b, [0x80, 0x80, 0xc0, 0x00]);
    }

    #[test]
    fn refuses_what_is_not_a_bare_engine() {
        assert!(embed(b"not wasm", b"{}").is_err());
        let core = b"\0asm\x01\0\0\0";
        assert!(embed(core, b"{}").is_err());
        let component = b"\0asm\x0d\0\x01\0";
        let e = embed(component, b"{}").unwrap_err().to_string();
        assert!(e.contains("no empty rule slot"), "{e}");
    }
}
