//! Binary checkpoints: `VCXCKPT\0`, a little-endian u32 format version, a
//! u32-length-prefixed JSON header (model, architecture signature, optimizer,
//! epochs completed, seed, metrics so far, buffer lengths), the parameter and
//! optimizer-state buffers as little-endian f32 bytes, and a SHA-256 of all
//! preceding bytes. Written to a temporary file, synced, then renamed, so a
//! killed run leaves either the old or the new checkpoint, never a torn one.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{EpochMetrics, TrainError};

const MAGIC: &[u8; 8] = b"VCXCKPT\0";
/// The checkpoint format this build writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Everything needed to continue a run exactly. Every random draw of a run
/// derives from (seed, epoch, batch), so `seed` and `epochs_completed` are
/// the whole generator state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Model kind, e.g. "cnn", "mlp", "dae-layer2".
    pub model: String,
    /// Architecture fingerprint (tensor names and shapes).
    pub signature: String,
    /// Optimizer name ("sgd", "momentum", "rmsprop").
    pub optimizer: String,
    pub epochs_completed: usize,
    pub seed: u64,
    /// Minibatch size and training images: a resumed run must use the same
    /// ones to continue the same curve.
    pub batch_size: usize,
    pub train_count: usize,
    /// Every other setting that shapes the curve (summary.json's settings
    /// less `epochs`, which a resumed run may raise) and a fingerprint of
    /// the data: a resumed run must match them all. Empty in checkpoints
    /// written before this field existed; those are not checked.
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub metrics: Vec<EpochMetrics>,
    #[serde(skip)]
    pub params: Vec<f32>,
    #[serde(skip)]
    pub optimizer_state: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(flatten)]
    meta: Checkpoint,
    /// Metrics with every f64 stored as its bit pattern: JSON text does not
    /// round-trip every f64 exactly, and a resumed curve must be identical.
    metrics: Vec<StoredMetrics>,
    params_len: usize,
    optimizer_state_len: usize,
}

#[derive(Serialize, Deserialize)]
struct StoredMetrics {
    epoch: usize,
    train_cost: u64,
    test_cost: Option<u64>,
    test_accuracy: Option<u64>,
    seconds: u64,
}

impl From<&EpochMetrics> for StoredMetrics {
    fn from(m: &EpochMetrics) -> Self {
        StoredMetrics {
            epoch: m.epoch,
            train_cost: m.train_cost.to_bits(),
            test_cost: m.test_cost.map(f64::to_bits),
            test_accuracy: m.test_accuracy.map(f64::to_bits),
            seconds: m.seconds.to_bits(),
        }
    }
}

impl From<&StoredMetrics> for EpochMetrics {
    fn from(m: &StoredMetrics) -> Self {
        EpochMetrics {
            epoch: m.epoch,
            train_cost: f64::from_bits(m.train_cost),
            test_cost: m.test_cost.map(f64::from_bits),
            test_accuracy: m.test_accuracy.map(f64::from_bits),
            seconds: f64::from_bits(m.seconds),
        }
    }
}

fn f32_bytes(out: &mut Vec<u8>, values: &[f32]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(values));
    } else {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

impl Checkpoint {
    /// Serialises to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            meta: self.clone_meta(),
            metrics: self.metrics.iter().map(StoredMetrics::from).collect(),
            params_len: self.params.len(),
            optimizer_state_len: self.optimizer_state.len(),
        };
        let json = serde_json::to_vec(&header).expect("checkpoint header serialises");
        let mut out = Vec::with_capacity(
            64 + json.len() + 4 * (self.params.len() + self.optimizer_state.len()),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        f32_bytes(&mut out, &self.params);
        f32_bytes(&mut out, &self.optimizer_state);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    fn clone_meta(&self) -> Checkpoint {
        Checkpoint {
            params: Vec::new(),
            optimizer_state: Vec::new(),
            metrics: Vec::new(),
            model: self.model.clone(),
            signature: self.signature.clone(),
            optimizer: self.optimizer.clone(),
            settings: self.settings.clone(),
            ..*self
        }
    }

    /// Parses bytes written by [`Checkpoint::to_bytes`]; `path` only names the
    /// file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, TrainError> {
        let bad = |why: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: why,
        };
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("not a vcortex checkpoint (bad magic bytes)".into()));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != CHECKPOINT_VERSION {
            return Err(bad(format!(
                "checkpoint format version {version}, this build reads version {CHECKPOINT_VERSION}"
            )));
        }
        if bytes.len() < 16 + 32 {
            return Err(bad("file is truncated".into()));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        if 16 + header_len > body.len() {
            return Err(bad("file is truncated (header runs past the end)".into()));
        }
        let header: Header = serde_json::from_slice(&body[16..16 + header_len]).map_err(|e| {
            bad(format!(
                "unreadable header ({e}); the file is truncated or corrupt"
            ))
        })?;
        let data = &body[16 + header_len..];
        // Checked arithmetic: the lengths come from the file, and a wrapped
        // product could match the data's length.
        let want = header
            .params_len
            .checked_add(header.optimizer_state_len)
            .and_then(|floats| floats.checked_mul(4));
        if want != Some(data.len()) {
            let announced =
                want.map_or_else(|| "more than fits in memory".into(), |w| w.to_string());
            return Err(bad(format!(
                "file is truncated or padded: {} data bytes, the header announces {announced}",
                data.len()
            )));
        }
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad(
                "checksum mismatch: the file is corrupt or truncated".into()
            ));
        }
        let floats: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        if header.metrics.len() != header.meta.epochs_completed {
            return Err(bad(format!(
                "holds the metrics of {} epochs but says {} were completed",
                header.metrics.len(),
                header.meta.epochs_completed
            )));
        }
        let mut meta = header.meta;
        meta.metrics = header.metrics.iter().map(EpochMetrics::from).collect();
        meta.optimizer_state = floats[header.params_len..].to_vec();
        meta.params = floats;
        meta.params.truncate(header.params_len);
        Ok(meta)
    }

    /// Writes atomically: `path.tmp`, fsync, rename over `path`.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let tmp = path.with_extension("bin.tmp");
        let io = |e| TrainError::io(&tmp, e);
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&self.to_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
    }

    pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
        // Only a regular file is read: a named pipe would block, a device
        // never end.
        let meta = fs::metadata(path).map_err(|e| TrainError::io(path, e))?;
        if !meta.is_file() {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        let bytes = fs::read(path).map_err(|e| TrainError::io(path, e))?;
        Checkpoint::from_bytes(&bytes, path)
    }

    /// Refuses a checkpoint of another model, architecture or optimizer.
    pub fn check_compatible(
        &self,
        path: &Path,
        model: &str,
        signature: &str,
        optimizer: &str,
        params_len: usize,
        state_len: usize,
    ) -> Result<(), TrainError> {
        let bad = |why: String| {
            Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: why,
            })
        };
        if self.model != model {
            return bad(format!(
                "checkpoint is for model '{}', this run trains '{model}'",
                self.model
            ));
        }
        if self.signature != signature || self.params.len() != params_len {
            return bad(format!(
                "checkpoint architecture [{}] with {} parameters differs from this run's \
                 [{signature}] with {params_len}",
                self.signature,
                self.params.len()
            ));
        }
        if self.optimizer != optimizer || self.optimizer_state.len() != state_len {
            return bad(format!(
                "checkpoint used optimizer '{}' with {} state values, this run uses \
                 '{optimizer}' with {state_len}",
                self.optimizer,
                self.optimizer_state.len()
            ));
        }
        Ok(())
    }
}
