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
    #[error(
        "agent audio at sample {at_sample} is too far ahead of the caller clock ({caller_sample})"
    )]
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
        let late_len = usize::try_from(late)
            .unwrap_or(usize::MAX)
            .min(samples.len());
        let kept = &samples[late_len..];
        let start = at_sample.max(self.frames);
        let lead = start - self.frames + kept.len() as u64;
        if !kept.is_empty() && lead > MAX_AGENT_LEAD_SECS * u64::from(self.sample_rate) {
            return Err(RecordingError::AgentTooFarAhead {
                at_sample,
                caller_sample: self.frames,
            });
        }
        self.dropped_agent_samples += late_len as u64;
        let samples = kept;
        if samples.is_empty() {
            return Ok(());
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
        && stored_data_size.is_multiple_of(block_align);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io::Cursor;
    use std::rc::Rc;

    const RATE: u32 = 8_000;

    /// A writer whose bytes can be snapshotted while the recorder still owns it: a snapshot is
    /// what a crash (kill -9) would leave on disk.
    #[derive(Clone, Default)]
    struct SharedCursor(Rc<RefCell<Cursor<Vec<u8>>>>);

    impl SharedCursor {
        fn snapshot(&self) -> Vec<u8> {
            self.0.borrow().get_ref().clone()
        }
    }

    impl Write for SharedCursor {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for SharedCursor {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.0.borrow_mut().seek(pos)
        }
    }

    /// Reads a stereo 16-bit WAV back with hound: (caller, agent).
    fn read_back(bytes: &[u8]) -> (Vec<i16>, Vec<i16>) {
        let mut reader = hound::WavReader::new(Cursor::new(bytes)).expect("hound reads it");
        let spec = reader.spec();
        assert_eq!(spec.channels, 2);
        assert_eq!(spec.bits_per_sample, 16);
        assert_eq!(spec.sample_format, hound::SampleFormat::Int);
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(samples.len() % 2, 0);
        let caller = samples.iter().step_by(2).copied().collect();
        let agent = samples.iter().skip(1).step_by(2).copied().collect();
        (caller, agent)
    }

    /// A distinctive, never-zero caller signal: sample k is `1 + k % 1000`.
    fn caller_signal(range: std::ops::Range<usize>) -> Vec<i16> {
        range.map(|k| 1 + (k % 1000) as i16).collect()
    }

    fn record(
        f: impl FnOnce(&mut DualChannelRecorder<&mut Cursor<Vec<u8>>>),
    ) -> (Vec<u8>, RecordingSummary) {
        let mut cursor = Cursor::new(Vec::new());
        let mut recorder = DualChannelRecorder::new(&mut cursor, RATE).unwrap();
        f(&mut recorder);
        let summary = recorder.finish().unwrap();
        (cursor.into_inner(), summary)
    }

    #[test]
    fn both_channels_hold_the_right_samples_at_the_right_places() {
        let (bytes, summary) = record(|r| {
            r.write_agent(200, &[-7; 100]).unwrap();
            for frame in caller_signal(0..1_000).chunks(160) {
                r.write_caller(frame).unwrap();
            }
        });
        assert_eq!(
            summary,
            RecordingSummary {
                frames: 1_000,
                sample_rate: RATE,
                dropped_agent_samples: 0
            }
        );
        assert_eq!(summary.duration_ms(), 125);
        let (caller, agent) = read_back(&bytes);
        assert_eq!(caller, caller_signal(0..1_000));
        assert!(agent[..200].iter().all(|&s| s == 0));
        assert!(agent[200..300].iter().all(|&s| s == -7));
        assert!(agent[300..].iter().all(|&s| s == 0));
    }

    #[test]
    fn agent_ahead_of_the_caller_is_buffered_and_flushed_at_finish() {
        let (bytes, summary) = record(|r| {
            r.write_caller(&caller_signal(0..100)).unwrap();
            // A whole TTS reply arrives at once, starting 50 samples ahead of the caller clock.
            let reply: Vec<i16> = (0..2_000).map(|k| -(k as i16) - 1).collect();
            r.write_agent(150, &reply).unwrap();
            assert_eq!(r.agent_buffered_samples(), 2_050);
            r.write_caller(&caller_signal(100..1_000)).unwrap();
            assert_eq!(r.frames(), 1_000);
            assert_eq!(r.agent_buffered_samples(), 1_150);
        });
        // The reply ends at 2150: past the caller's 1000, with the caller side silent.
        assert_eq!(summary.frames, 2_150);
        let (caller, agent) = read_back(&bytes);
        assert_eq!(&caller[..1_000], &caller_signal(0..1_000)[..]);
        assert!(caller[1_000..].iter().all(|&s| s == 0));
        assert!(agent[..150].iter().all(|&s| s == 0));
        let expected: Vec<i16> = (0..2_000).map(|k| -(k as i16) - 1).collect();
        assert_eq!(&agent[150..], &expected[..]);
    }

    #[test]
    fn gaps_between_agent_writes_are_silence_and_overlaps_mix() {
        let (bytes, _) = record(|r| {
            r.write_agent(100, &[1_000; 50]).unwrap();
            r.write_agent(300, &[2_000; 50]).unwrap();
            // Overlaps the second write by 20 samples: mixed, not overwritten.
            r.write_agent(330, &[500; 40]).unwrap();
            // Mixing saturates instead of wrapping.
            r.write_agent(400, &[i16::MAX; 10]).unwrap();
            r.write_agent(405, &[i16::MAX; 10]).unwrap();
            r.write_agent(420, &[i16::MIN; 5]).unwrap();
            r.write_agent(420, &[-1; 5]).unwrap();
            r.write_caller(&[0; 500]).unwrap();
        });
        let (_, agent) = read_back(&bytes);
        assert!(agent[..100].iter().all(|&s| s == 0));
        assert!(agent[100..150].iter().all(|&s| s == 1_000));
        assert!(agent[150..300].iter().all(|&s| s == 0));
        assert!(agent[300..330].iter().all(|&s| s == 2_000));
        assert!(agent[330..350].iter().all(|&s| s == 2_500));
        assert!(agent[350..370].iter().all(|&s| s == 500));
        assert!(agent[370..400].iter().all(|&s| s == 0));
        assert!(agent[400..415].iter().all(|&s| s == i16::MAX));
        assert!(agent[420..425].iter().all(|&s| s == i16::MIN));
        assert!(agent[425..].iter().all(|&s| s == 0));
    }

    #[test]
    fn late_agent_audio_is_dropped_and_counted() {
        let (bytes, summary) = record(|r| {
            r.write_caller(&caller_signal(0..500)).unwrap();
            // Entirely in the past.
            r.write_agent(0, &[9; 100]).unwrap();
            assert_eq!(r.dropped_agent_samples(), 100);
            // Straddles the caller clock: 100 late, 100 kept at 500..600.
            r.write_agent(400, &[5; 200]).unwrap();
            assert_eq!(r.dropped_agent_samples(), 200);
            r.write_caller(&caller_signal(500..700)).unwrap();
        });
        assert_eq!(summary.dropped_agent_samples, 200);
        assert_eq!(summary.frames, 700);
        let (caller, agent) = read_back(&bytes);
        assert_eq!(caller, caller_signal(0..700));
        assert!(agent[..500].iter().all(|&s| s == 0));
        assert!(agent[500..600].iter().all(|&s| s == 5));
        assert!(agent[600..].iter().all(|&s| s == 0));
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let mut cursor = Cursor::new(Vec::new());
        assert!(matches!(
            DualChannelRecorder::new(&mut cursor, 0),
            Err(RecordingError::ZeroSampleRate)
        ));
        let mut cursor = Cursor::new(Vec::new());
        let mut recorder = DualChannelRecorder::new(&mut cursor, RATE).unwrap();
        let too_far = MAX_AGENT_LEAD_SECS * u64::from(RATE);
        assert!(matches!(
            recorder.write_agent(too_far, &[1; 10]),
            Err(RecordingError::AgentTooFarAhead {
                caller_sample: 0,
                ..
            })
        ));
        // Nothing was buffered by the refused write.
        assert_eq!(recorder.agent_buffered_samples(), 0);
        recorder.write_agent(too_far - 10, &[1; 10]).unwrap();
    }

    #[test]
    fn checkpoint_makes_the_bytes_so_far_a_valid_wav() {
        let shared = SharedCursor::default();
        let mut recorder = DualChannelRecorder::new(shared.clone(), RATE).unwrap();
        recorder.write_agent(10, &[3; 20]).unwrap();
        recorder.write_caller(&caller_signal(0..320)).unwrap();
        recorder.checkpoint().unwrap();
        let (caller, agent) = read_back(&shared.snapshot());
        assert_eq!(caller, caller_signal(0..320));
        assert_eq!(agent[10..30], [3; 20]);

        // Recording goes on after a checkpoint.
        recorder.write_caller(&caller_signal(320..480)).unwrap();
        let summary = recorder.finish().unwrap();
        assert_eq!(summary.frames, 480);
        let (caller, _) = read_back(&shared.snapshot());
        assert_eq!(caller, caller_signal(0..480));
    }

    /// Records, checkpoints, records more without a checkpoint, then "crashes": returns the raw
    /// bytes at that moment, plus a torn trailing frame of `torn` bytes.
    fn crashed_recording(checkpoint_at: usize, total: usize, torn: usize) -> Vec<u8> {
        let shared = SharedCursor::default();
        let mut recorder = DualChannelRecorder::new(shared.clone(), RATE).unwrap();
        recorder.write_agent(100, &[-3; 300]).unwrap();
        for (i, frame) in caller_signal(0..total).chunks(160).enumerate() {
            if i * 160 == checkpoint_at {
                recorder.checkpoint().unwrap();
            }
            recorder.write_caller(frame).unwrap();
        }
        let mut bytes = shared.snapshot();
        // Never finalised: the recorder is leaked, as a killed process would leave it.
        std::mem::forget(recorder);
        bytes.extend(std::iter::repeat_n(0x55, torn));
        bytes
    }

    #[test]
    fn a_crash_between_checkpoints_is_repaired_without_losing_samples() {
        for torn in [0, 1, 2, 3] {
            let bytes = crashed_recording(800, 1_440, torn);
            // Before repair, the header only knows the checkpointed 800 frames.
            assert_eq!(read_back(&bytes).0.len(), 800);

            let mut file = Cursor::new(bytes.clone());
            let outcome = repair(&mut file).unwrap();
            assert_eq!(
                outcome,
                RepairOutcome::Repaired { frames: 1_440 },
                "torn {torn}"
            );
            let repaired = file.into_inner();
            assert_eq!(repaired.len(), bytes.len(), "nothing truncated");
            assert_eq!(repaired[44..], bytes[44..], "only the header changed");

            let (caller, agent) = read_back(&repaired);
            assert_eq!(caller, caller_signal(0..1_440));
            assert!(agent[100..400].iter().all(|&s| s == -3));
            assert!(agent[400..].iter().all(|&s| s == 0));

            // Repairing again finds nothing to do.
            let mut file = Cursor::new(repaired);
            assert_eq!(
                repair(&mut file).unwrap(),
                RepairOutcome::AlreadyValid { frames: 1_440 }
            );
        }
    }

    #[test]
    fn a_crash_before_any_checkpoint_is_repaired() {
        // Header sizes still zero, as hound first wrote them.
        let bytes = crashed_recording(usize::MAX, 1_000, 2);
        assert_eq!(u32_le(&bytes[4..8]), 0);
        assert_eq!(u32_le(&bytes[40..44]), 0);
        let mut file = Cursor::new(bytes);
        assert_eq!(
            repair(&mut file).unwrap(),
            RepairOutcome::Repaired { frames: 1_000 }
        );
        let (caller, _) = read_back(file.get_ref());
        assert_eq!(caller, caller_signal(0..1_000));
    }

    #[test]
    fn repair_leaves_a_valid_file_alone() {
        let (bytes, _) = record(|r| r.write_caller(&caller_signal(0..777)).unwrap());
        let mut file = Cursor::new(bytes.clone());
        assert_eq!(
            repair(&mut file).unwrap(),
            RepairOutcome::AlreadyValid { frames: 777 }
        );
        assert_eq!(file.into_inner(), bytes);

        // An empty recording is valid too.
        let (bytes, summary) = record(|_| {});
        assert_eq!(summary.frames, 0);
        let mut file = Cursor::new(bytes);
        assert_eq!(
            repair(&mut file).unwrap(),
            RepairOutcome::AlreadyValid { frames: 0 }
        );
    }

    #[test]
    fn repair_rejects_what_is_not_a_wav() {
        let junk: [&[u8]; 5] = [
            b"",
            b"RIFF",
            b"hello, this is not a wav file at all, not even close......",
            // RIFF/WAVE but no data chunk.
            b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00",
            // A data chunk before any fmt chunk.
            b"RIFF\x0c\x00\x00\x00WAVEdata\x00\x00\x00\x00\x01\x02\x03\x04",
        ];
        for bytes in junk {
            let mut file = Cursor::new(bytes.to_vec());
            assert_eq!(
                repair(&mut file).unwrap(),
                RepairOutcome::NotWav,
                "{bytes:?}"
            );
            assert_eq!(file.into_inner(), bytes, "left untouched");
        }
    }

    /// Inserts a chunk between `fmt ` and `data` of a recorder file (and fixes nothing else).
    fn with_chunk_before_data(bytes: &[u8], id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = bytes[..36].to_vec();
        out.extend_from_slice(id);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        if body.len() % 2 == 1 {
            out.push(0);
        }
        out.extend_from_slice(&bytes[36..]);
        out
    }

    #[test]
    fn repair_walks_past_extra_chunks_before_data() {
        let bytes = crashed_recording(480, 960, 1);
        // Even-length body: hound 3.5 does not skip RIFF pad bytes when reading back.
        let bytes = with_chunk_before_data(&bytes, b"LIST", b"INFOISFT\x04\x00\x00\x00vox\x00");
        let mut file = Cursor::new(bytes);
        assert_eq!(
            repair(&mut file).unwrap(),
            RepairOutcome::Repaired { frames: 960 }
        );
        let (caller, _) = read_back(file.get_ref());
        assert_eq!(caller, caller_signal(0..960));

        // An odd-length chunk is followed by a pad byte, which the walk must skip.
        let bytes = crashed_recording(480, 960, 3);
        let bytes = with_chunk_before_data(&bytes, b"JUNK", b"odd");
        let data_pos = 36 + 8 + 4;
        assert_eq!(&bytes[data_pos..data_pos + 4], b"data");
        let mut file = Cursor::new(bytes);
        assert_eq!(
            repair(&mut file).unwrap(),
            RepairOutcome::Repaired { frames: 960 }
        );
        let bytes = file.into_inner();
        assert_eq!(u32_le(&bytes[data_pos + 4..]), 960 * 4);
        assert_eq!(u32_le(&bytes[4..]) as usize, data_pos + 8 + 960 * 4 - 8);
    }

    #[test]
    fn repair_accepts_a_complete_file_with_a_chunk_after_data() {
        let (mut bytes, _) = record(|r| r.write_caller(&caller_signal(0..100)).unwrap());
        bytes.extend_from_slice(b"LIST\x04\x00\x00\x00INFO");
        let riff = (bytes.len() - 8) as u32;
        bytes[4..8].copy_from_slice(&riff.to_le_bytes());
        let mut file = Cursor::new(bytes.clone());
        assert_eq!(
            repair(&mut file).unwrap(),
            RepairOutcome::AlreadyValid { frames: 100 }
        );
        assert_eq!(file.into_inner(), bytes);
    }

    #[test]
    fn recorder_works_over_a_real_file() {
        // `impl Write + Seek` covers files; repair works in place on one.
        let mut file = tempfile::tempfile().unwrap();
        {
            let mut recorder = DualChannelRecorder::new(&mut file, 16_000).unwrap();
            recorder.write_caller(&caller_signal(0..640)).unwrap();
            recorder.checkpoint().unwrap();
            recorder.write_caller(&caller_signal(640..960)).unwrap();
            std::mem::forget(recorder);
        }
        assert_eq!(
            repair(&mut file).unwrap(),
            RepairOutcome::Repaired { frames: 960 }
        );
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(read_back(&bytes).0, caller_signal(0..960));
    }
}
