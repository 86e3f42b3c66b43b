//! How a map task reads a block: a variable's steps in pieces of at most the memory budget
//! (or streamed from local Zarr arrays), each source step read once.

use std::collections::BTreeMap;
use std::ops::Range;

use super::source::SourceReader;
use crate::error::{Error, Result};
use crate::zarr::ChunkView;

use super::plan::*;

impl CubePlan {
    /// How a map task reads variable `v` of block `b` (steps of `step_bytes`): where every
    /// source of the block streams it (a local Zarr array, decoded in order), in pieces of at
    /// most [`STREAM_PIECE_BYTES`] with up to three buffers in flight, so that reading
    /// overlaps folding and the piece being folded is still in the cache; else in pieces of
    /// the budget that end on source chunks (each decoded once), one buffer.
    pub(super) fn read_plan<'a>(
        &'a self,
        readers: &mut BTreeMap<u32, SourceReader<'a>>,
        b: MapBlock,
        v: usize,
        step_bytes: usize,
    ) -> Result<ReadPlan> {
        let name = &self.variables[v].name;
        let mut streamed = !self.products.iter().any(|p| p.staged);
        let mut seen = Vec::new();
        for &(s, _) in &self.steps[b.t0..b.t1] {
            if !streamed || seen.contains(&s) {
                continue;
            }
            seen.push(s);
            let source = &self.sources[s as usize];
            if let std::collections::btree_map::Entry::Vacant(e) = readers.entry(s) {
                e.insert(SourceReader::open(source)?);
            }
            streamed = source
                .variable(name)
                .is_some_and(|sv| readers[&s].streams(sv));
        }
        if !streamed {
            return Ok(ReadPlan {
                pieces: self.pieces(b, v, self.piece_steps),
                buffers: 1,
                whole: None,
            });
        }
        // Whole chunks, decoded in place: when every source chunk is whole steps of the band,
        // and any step may end a piece (no product cuts time chunks).
        let band_is_grid = self.bands[b.band].len() == (self.grid.rows as usize);
        let free_cuts = self.piece_cuts.len() == self.times.len() + 1;
        let mut whole = None;
        if band_is_grid && free_cuts {
            for &s in &seen {
                let source = &self.sources[s as usize];
                let ct = source
                    .variable(name)
                    .and_then(|sv| readers[&s].whole_steps(sv));
                whole = match (whole, ct) {
                    (None, Some(ct)) if s == seen[0] => Some(ct),
                    (Some(a), Some(ct)) if a == ct => Some(a),
                    _ => None,
                };
                if whole.is_none() {
                    break;
                }
            }
        }
        // A piece is at most a chunk, and must be consecutive steps of one chunk of one source
        // (a step dropped as a duplicate leaves a gap). The ring the chunks decode into is three
        // segments of a zstd window and a step (a few MB), each at most a chunk.
        if let Some(ct) = whole
            && ct <= self.piece_steps
        {
            let pieces = self.pieces(b, v, ct);
            let in_one_chunk = |p: &Range<usize>| {
                let (s, j) = self.steps[p.start];
                p.clone().enumerate().all(|(k, i)| {
                    self.steps[i] == (s, j + k as u32) && (j as usize + k) / ct == j as usize / ct
                })
            };
            if pieces.iter().all(in_one_chunk) {
                return Ok(ReadPlan {
                    pieces,
                    buffers: 0,
                    whole: Some(ct),
                });
            }
        }
        let limit =
            (STREAM_PIECE_BYTES / step_bytes.max(1)).clamp(1, (self.piece_steps / 3).max(1));
        let pieces = self.pieces(b, v, limit);
        let longest = pieces.iter().map(|p| p.len()).max().unwrap_or(0);
        Ok(ReadPlan {
            buffers: if 3 * longest <= self.piece_steps {
                3
            } else {
                1
            },
            pieces,
            whole: None,
        })
    }

    /// Reads steps `times` × rows `rows` of variable `v` from the sources.
    pub(super) fn read<'a>(
        &'a self,
        readers: &mut BTreeMap<u32, SourceReader<'a>>,
        v: usize,
        times: Range<usize>,
        rows: Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let var = &self.variables[v];
        let plane = var.axes_len() * rows.len() * (self.grid.cols as usize);
        out.resize(times.len() * plane, 0.0);
        let mut i = times.start;
        while i < times.end {
            let (s, j) = self.steps[i];
            let mut k = i + 1;
            while k < times.end
                && self.steps[k].0 == s
                && self.steps[k].1 == self.steps[k - 1].1 + 1
            {
                k += 1;
            }
            let source = &self.sources[s as usize];
            if let std::collections::btree_map::Entry::Vacant(e) = readers.entry(s) {
                e.insert(SourceReader::open(source)?);
            }
            let reader = &readers[&s];
            let sv = source.variable(&var.name).ok_or_else(|| {
                Error::source(&source.url, format!("has no variable {}", var.name))
            })?;
            let j = j as usize;
            reader.read(
                sv,
                j..j + (k - i),
                rows.clone(),
                &mut out[(i - times.start) * plane..(k - times.start) * plane],
            )?;
            i = k;
        }
        Ok(())
    }
}

/// A resample in progress within a block: accumulators for one output chunk at a time.
/// What a streamed piece holds at most: small enough to stay in the cache between being
/// decoded and being folded.
pub(super) const STREAM_PIECE_BYTES: usize = 4 << 20;

/// The pieces a map task reads and how many piece buffers circulate.
pub(super) struct ReadPlan {
    pub(super) pieces: Vec<Range<usize>>,
    pub(super) buffers: usize,
    /// Steps per source chunk when chunks decode whole, in place, into one chunk buffer that
    /// the fold reads from as it fills (no piece buffers then).
    pub(super) whole: Option<usize>,
}

/// A piece's values: a buffer of its own, or decoded steps of a chunk buffer.
pub(super) enum PieceData {
    Owned(Vec<f32>),
    View(ChunkView),
}

impl PieceData {
    pub(super) fn values(&self) -> &[f32] {
        match self {
            PieceData::Owned(v) => v,
            PieceData::View(v) => v.values(),
        }
    }

    /// The piece's own buffer, for the next piece (a view has none).
    pub(super) fn into_buffer(self) -> Vec<f32> {
        match self {
            PieceData::Owned(v) => v,
            PieceData::View(_) => Vec::new(),
        }
    }
}
