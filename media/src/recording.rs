//! Crash-safe dual-channel call recording: a 16-bit PCM stereo WAV, left = caller, right = agent.
//!
//! Media time is counted in samples and the **caller channel is the clock**: caller audio arrives
//! contiguously (sample `k` of the caller is at media time `k`), and each caller sample written
//! finalises one stereo frame. Agent audio is placed at an explicit media time, usually ahead of
//! the caller clock (TTS runs faster than real time), so it is buffered until the caller clock
//! reaches it:
//! - gaps in agent audio are silence;
//! - overlapping agent writes are **mixed** (saturating add), because two overlapping agent
//!   utterances really did both play (e.g. a filler and the answer);
//! - agent audio that falls before the caller clock (its frames are already on disk) is dropped
//!   and counted in [`DualChannelRecorder::dropped_agent_samples`].
//!
//! Crash safety: [`DualChannelRecorder::checkpoint`] rewrites the RIFF and data sizes, so the
//! bytes on disk at that point are a valid WAV; the call task checkpoints about once a second.
//! A file left behind by a crash between checkpoints (stale sizes, maybe a torn last frame) is
//! fixed by [`repair`] without truncating anything.
//!
//! Writing goes through `hound`; the recorder never opens a file itself. `hound` does not buffer,
//! but the recorder hands it one batch per [`write_caller`](DualChannelRecorder::write_caller)
//! call, so an unbuffered `File` sees one `write` per frame.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};

/// How far ahead of the caller clock agent audio may be placed, in seconds.
///
/// TTS streams a whole reply faster than real time; the longest replies we expect are well under
/// a minute. Two minutes bounds the buffer (≈ 3.8 MB at 16 kHz) against a bogus timestamp, while
/// never rejecting a real reply.
pub const MAX_AGENT_LEAD_SECS: u64 = 120;

/// Bytes per stereo 16-bit frame.
const FRAME_BYTES: u64 = 4;

/// Largest data chunk a RIFF file can describe (its size fields are `u32`), in whole frames.
const MAX_FRAMES: u64 = (u32::MAX as u64 - 36) / FRAME_BYTES;

/// Errors from recording or repairing a WAV.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The writer (or file being repaired) failed.
    #[error("recording I/O failed")]
    Io(#[from] std::io::Error),
    /// `hound` failed (it wraps I/O errors of the writer too).
    #[error("WAV writer failed")]
    Wav(#[from] hound::Error),
    /// A sample rate of zero was asked for.
    #[error("sample rate must be positive")]
    ZeroSampleRate,
    /// The recording would outgrow the 4 GiB a RIFF header can describe.
    #[error("recording exceeds the WAV size limit of {MAX_FRAMES} frames")]
    TooLong,
    /// Agent audio was placed further ahead of the caller clock than [`MAX_AGENT_LEAD_SECS`].
    #[error("agent audio at sample {at_sample} is too far ahead of the caller clock ({caller_sample})")]
    AgentTooFarAhead {
        /// Where the agent audio was placed.
        at_sample: u64,
        /// The caller clock at the time.
        caller_sample: u64,
    },
}

/// What a finished recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingSummary {
    /// Stereo frames written.
    pub frames: u64,
    /// Frames per second.
    pub sample_rate: u32,
    /// Agent samples dropped because they arrived for media time already written.
    pub dropped_agent_samples: u64,
}

impl RecordingSummary {
    /// Length of the recording in milliseconds (rounded down).
    pub fn duration_ms(&self) -> u64 {
        if self.sample_rate == 0 {
            return 0;
        }
        self.frames * 1000 / u64::from(self.sample_rate)
    }
}

/// Writes a stereo WAV (left = caller, right = agent) to `W` as the caller clock advances.
pub struct DualChannelRecorder<W: Write + Seek> {
    wav: hound::WavWriter<W>,
    sample_rate: u32,
    /// Stereo frames written = the caller clock, in samples.
    frames: u64,
    /// Agent audio for media time `frames..frames + agent.len()`; gaps are zeros.
    agent: VecDeque<i16>,
    dropped_agent_samples: u64,
}

impl<W: Write + Seek> std::fmt::Debug for DualChannelRecorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualChannelRecorder")
            .field("sample_rate", &self.sample_rate)
            .field("frames", &self.frames)
            .field("agent_buffered", &self.agent.len())
            .field("dropped_agent_samples", &self.dropped_agent_samples)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Seek> DualChannelRecorder<W> {
    /// Starts a recording at `sample_rate` on `writer` (positioned at its start); writes the
    /// 44-byte header immediately.
    pub fn new(writer: W, sample_rate: u32) -> Result<Self, RecordingError> {
        if sample_rate == 0 {
            return Err(RecordingError::ZeroSampleRate);
        }
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(Self {
            wav: hound::WavWriter::new(writer, spec)?,
            sample_rate,
            frames: 0,
            agent: VecDeque::new(),
            dropped_agent_samples: 0,
        })
    }

    /// Appends caller audio at the caller clock, writing one stereo frame per sample with the
    /// agent audio buffered for the same media time (silence where there is none).
    pub fn write_caller(&mut self, samples: &[i16]) -> Result<(), RecordingError> {
        self.write_frames(samples.len(), |i| samples[i])
    }

    /// Places agent audio at media time `at_sample`, mixed (saturating add) with any agent audio
    /// already placed there. The part before the caller clock is dropped and counted.
    pub fn write_agent(&mut self, at_sample: u64, samples: &[i16]) -> Result<(), RecordingError> {
        let late = self.frames.saturating_sub(at_sample);
        let late_len = usize::try_from(late).unwrap_or(usize::MAX).min(samples.len());
        self.dropped_agent_samples += late_len as u64;
        let samples = &samples[late_len..];
        if samples.is_empty() {
            return Ok(());
        }
        let start = at_sample.max(self.frames);
        let lead = start - self.frames + samples.len() as u64;
        if lead > MAX_AGENT_LEAD_SECS * u64::from(self.sample_rate) {
            return Err(RecordingError::AgentTooFarAhead {
                at_sample,
                caller_sample: self.frames,
            });
        }
        let offset = (start - self.frames) as usize;
        let end = offset + samples.len();
        if self.agent.len() < end {
            self.agent.resize(end, 0);
        }
        for (slot, &s) in self.agent.range_mut(offset..end).zip(samples) {
            *slot = slot.saturating_add(s);
        }
        Ok(())
    }

    /// Makes everything written so far a valid WAV on the writer: rewrites the header sizes and
    /// flushes the writer. Agent audio ahead of the caller clock stays buffered.
    pub fn checkpoint(&mut self) -> Result<(), RecordingError> {
        self.wav.flush()?;
        Ok(())
    }

    /// Ends the recording: writes the agent audio still buffered past the caller clock (caller
    /// side silent), then finalises the header.
    pub fn finish(mut self) -> Result<RecordingSummary, RecordingError> {
        let tail = self.agent.len();
        self.write_frames(tail, |_| 0)?;
        let summary = RecordingSummary {
            frames: self.frames,
            sample_rate: self.sample_rate,
            dropped_agent_samples: self.dropped_agent_samples,
        };
        self.wav.finalize()?;
        Ok(summary)
    }

    /// Stereo frames written so far (the caller clock).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames per second.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Agent samples dropped so far because they arrived for media time already written.
    pub fn dropped_agent_samples(&self) -> u64 {
        self.dropped_agent_samples
    }

    /// Agent samples buffered ahead of the caller clock (including silent gaps).
    pub fn agent_buffered_samples(&self) -> usize {
        self.agent.len()
    }

    /// Writes `n` stereo frames: caller sample `caller(i)` on the left, the buffered agent audio
    /// on the right.
    fn write_frames(
        &mut self,
        n: usize,
        caller: impl Fn(usize) -> i16,
    ) -> Result<(), RecordingError> {
        if n == 0 {
            return Ok(());
        }
        if self.frames + n as u64 > MAX_FRAMES {
            return Err(RecordingError::TooLong);
        }
        // hound's sample writer reuses its byte buffer across calls once it is large enough.
        let mut batch = self.wav.get_i16_writer((2 * n) as u32);
        for i in 0..n {
            batch.write_sample(caller(i));
            batch.write_sample(self.agent.pop_front().unwrap_or(0));
        }
        batch.flush()?;
        self.frames += n as u64;
        Ok(())
    }
}

/// What [`repair`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairOutcome {
    /// The header already matched the data; nothing was written.
    AlreadyValid {
        /// Whole frames in the data chunk.
        frames: u64,
    },
    /// The RIFF and data sizes were rewritten from the file's real length.
    Repaired {
        /// Whole frames in the data chunk now.
        frames: u64,
    },
    /// Not a RIFF/WAVE file with a `fmt ` chunk followed by a `data` chunk; left untouched.
    NotWav,
}

/// How many chunks [`repair`] walks past looking for `data` before giving up on the file.
/// Recorder files have two (`fmt `, `data`); other writers add a few (`LIST`, `fact`, `JUNK`).
const MAX_CHUNKS_BEFORE_DATA: usize = 32;

/// Fixes the header of a WAV left behind by a crash: sets the RIFF and data chunk sizes from the
/// file's real length. Nothing is truncated; a trailing partial frame is left in place but not
/// counted in the sizes.
///
/// Works for any PCM WAV whose `data` chunk runs to the end of the file (as the recorder writes
/// it), with any chunks before `data`. A file whose sizes are already consistent — including a
/// complete file with chunks after `data` — is reported [`RepairOutcome::AlreadyValid`] and not
/// written to. The stream position is left unspecified.
pub fn repair<F: Read + Write + Seek>(file: &mut F) -> Result<RepairOutcome, RecordingError> {
    let file_len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut riff = [0u8; 12];
    if !read_exact_or_eof(file, &mut riff)? || &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Ok(RepairOutcome::NotWav);
    }
    let riff_size = u32_le(&riff[4..8]);

    let mut pos = 12u64;
    let mut block_align = None;
    for _ in 0..MAX_CHUNKS_BEFORE_DATA {
        let mut header = [0u8; 8];
        file.seek(SeekFrom::Start(pos))?;
        if !read_exact_or_eof(file, &mut header)? {
            return Ok(RepairOutcome::NotWav);
        }
        let id = &header[0..4];
        let size = u64::from(u32_le(&header[4..8]));
        let body = pos + 8;
        if id == b"data" {
            let Some(block_align) = block_align else {
                return Ok(RepairOutcome::NotWav);
            };
            return fix_sizes(file, file_len, riff_size, pos, size, block_align);
        }
        if id == b"fmt " {
            // WAVEFORMAT: tag(2) channels(2) rate(4) byte rate(4) block align(2).
            let mut fmt = [0u8; 14];
            if size < 14 || !read_exact_or_eof(file, &mut fmt)? {
                return Ok(RepairOutcome::NotWav);
            }
            let align = u64::from(u16::from_le_bytes([fmt[12], fmt[13]]));
            if align == 0 {
                return Ok(RepairOutcome::NotWav);
            }
            block_align = Some(align);
        }
        // Chunks are padded to an even length.
        pos = body + size + (size & 1);
        if pos >= file_len {
            return Ok(RepairOutcome::NotWav);
        }
    }
    Ok(RepairOutcome::NotWav)
}

/// Checks and, if stale, rewrites the sizes of a WAV whose `data` chunk header is at `data_pos`.
fn fix_sizes<F: Write + Seek>(
    file: &mut F,
    file_len: u64,
    riff_size: u32,
    data_pos: u64,
    stored_data_size: u64,
    block_align: u64,
) -> Result<RepairOutcome, RecordingError> {
    let data_start = data_pos + 8;
    let available = file_len.saturating_sub(data_start);
    let data_size = available / block_align * block_align;
    // The RIFF size covers everything after its own 8 bytes up to the end of the data chunk.
    let riff_for = |data: u64| data_start - 8 + data + (data & 1);

    // Consistent as it stands: the sizes describe exactly the whole frames on disk, or (a complete
    // file from another writer, with chunks after `data`) the RIFF size covers the whole file and
    // the data chunk fits in it.
    let exact = stored_data_size == data_size && u64::from(riff_size) == riff_for(data_size);
    let complete_with_trailer = u64::from(riff_size) == file_len - 8
        && stored_data_size > 0
        && stored_data_size < data_size
        && stored_data_size % block_align == 0;
    if exact || complete_with_trailer {
        return Ok(RepairOutcome::AlreadyValid {
            frames: stored_data_size / block_align,
        });
    }

    let riff_size = u32::try_from(riff_for(data_size)).map_err(|_| RecordingError::TooLong)?;
    let data_size_u32 = u32::try_from(data_size).map_err(|_| RecordingError::TooLong)?;
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&riff_size.to_le_bytes())?;
    file.seek(SeekFrom::Start(data_pos + 4))?;
    file.write_all(&data_size_u32.to_le_bytes())?;
    file.flush()?;
    Ok(RepairOutcome::Repaired {
        frames: data_size / block_align,
    })
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Fills `buf`, or returns `Ok(false)` if the reader ends first.
fn read_exact_or_eof<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}
