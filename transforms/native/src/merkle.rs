//! RFC 9162 Merkle hashing in batches (transforms/merkle.py holds the reference of each).
//!
//! Verify and the tile writers hash every leaf and every interior node of a log; one call per
//! block or per level replaces a Python call per hash, and the hashing runs with the GIL
//! released, so the archive's read-ahead threads and the checking thread can overlap.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use sha2::{Digest, Sha256};

const HASH: usize = 32;
/// Below this many bytes of input the GIL is kept: releasing it costs more than the hashing.
const DETACH_FROM: usize = 16 * 1024;

fn node(left: &[u8], right: &[u8]) -> [u8; HASH] {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

fn pairs(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2);
    for pair in data.chunks_exact(2 * HASH) {
        out.extend_from_slice(&node(&pair[..HASH], &pair[HASH..]));
    }
    out
}

/// The root of the left-balanced tree over `data`'s hashes: levels paired bottom up, an odd last
/// node carried up unchanged, which is RFC 9162's split at the largest power of two.
fn root_of(data: &[u8]) -> [u8; HASH] {
    if data.is_empty() {
        return Sha256::digest(b"").into();
    }
    let mut level = data.to_vec();
    while level.len() > HASH {
        let mut next = pairs(&level);
        if (level.len() / HASH) % 2 == 1 {
            next.extend_from_slice(&level[level.len() - HASH..]);
        }
        level = next;
    }
    level.try_into().expect("one hash")
}

fn whole_hashes(data: &[u8], what: &str) -> PyResult<()> {
    if data.len() % HASH != 0 {
        return Err(PyValueError::new_err(format!(
            "{what} is {} bytes, not a whole number of 32-byte hashes",
            data.len()
        )));
    }
    Ok(())
}

fn detached<T: Send>(py: Python<'_>, size: usize, f: impl FnOnce() -> T + Send) -> T {
    if size >= DETACH_FROM {
        py.detach(f)
    } else {
        f()
    }
}

/// SHA-256(0x00 ‖ entry) for each entry (transforms/merkle.py leaf_hash).
#[pyfunction]
pub(crate) fn leaf_hashes<'py>(py: Python<'py>, entries: Vec<Vec<u8>>) -> Vec<Bound<'py, PyBytes>> {
    let size = entries.iter().map(Vec::len).sum();
    let hashes: Vec<[u8; HASH]> = detached(py, size, || {
        entries
            .iter()
            .map(|e| {
                let mut hasher = Sha256::new();
                hasher.update([0u8]);
                hasher.update(e);
                hasher.finalize().into()
            })
            .collect()
    });
    hashes.iter().map(|h| PyBytes::new(py, h)).collect()
}

/// SHA-256(0x01 ‖ left ‖ right) of each pair of hashes in `data`, concatenated
/// (transforms/merkle.py node_level).
#[pyfunction]
pub(crate) fn node_level<'py>(py: Python<'py>, data: PyBackedBytes) -> PyResult<Bound<'py, PyBytes>> {
    let data: &[u8] = &data;
    if data.len() % (2 * HASH) != 0 {
        return Err(PyValueError::new_err(format!(
            "a level of pairs is {} bytes, not a whole number of 64-byte pairs",
            data.len()
        )));
    }
    let out = detached(py, data.len(), || pairs(data));
    Ok(PyBytes::new(py, &out))
}

/// The Merkle tree hash of the concatenated leaf hashes in `data` (transforms/merkle.py root).
#[pyfunction]
pub(crate) fn merkle_root<'py>(py: Python<'py>, data: PyBackedBytes) -> PyResult<Bound<'py, PyBytes>> {
    let data: &[u8] = &data;
    whole_hashes(data, "a list of leaf hashes")?;
    let root = detached(py, data.len(), || root_of(data));
    Ok(PyBytes::new(py, &root))
}

/// Every complete node of a hash tile by height (transforms/tiles/hashes.py tile_levels): [0] its
/// 32-byte hashes, [k][j] = SHA-256(0x01 ‖ [k-1][2j] ‖ [k-1][2j+1]).
#[pyfunction]
pub(crate) fn tile_levels<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Vec<Vec<Bound<'py, PyBytes>>>> {
    whole_hashes(data, "tile")?;
    let mut level = data.to_vec();
    let mut out = Vec::new();
    loop {
        out.push(level.chunks_exact(HASH).map(|h| PyBytes::new(py, h)).collect());
        if level.len() < 2 * HASH {
            break;
        }
        level = pairs(&level);
    }
    Ok(out)
}
