//! The cost of one 20 ms frame on each step of a call's media path, and of the conversation
//! core as a whole. Multiply by 50 frames a second for CPU per call.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use agent::conversation::{Conversation, ConversationConfig, Input, SegmentId};
use media::resample::Resampler;
use media::vad::{EarshotVad, VoiceDetector};
use media::{ENGINE_FRAME, PHONE_FRAME, PHONE_RATE, mulaw, testsignal};
use telephony::protocol;

fn inbound(c: &mut Criterion) {
    let voice = testsignal::voice(PHONE_RATE, 2_000, 1);
    let frame: Vec<i16> = voice[4_000..4_000 + PHONE_FRAME].to_vec();
    let mut ulaw = Vec::new();
    mulaw::encode_into(&frame, &mut ulaw);
    let message = protocol::twilio::media(42, "MZ0123", 41, 820, &ulaw);

    let mut g = c.benchmark_group("inbound_frame");
    g.bench_function("parse_twilio_media_json", |b| {
        b.iter(|| protocol::parse(black_box(&message)).unwrap())
    });
    let protocol::Inbound::Media(media) = protocol::parse(&message).unwrap() else {
        unreachable!()
    };
    let mut payload = Vec::with_capacity(PHONE_FRAME);
    g.bench_function("base64_decode", |b| {
        b.iter(|| protocol::decode_payload(black_box(&media.payload), &mut payload).unwrap())
    });
    let mut pcm = Vec::with_capacity(PHONE_FRAME);
    g.bench_function("mulaw_decode_160", |b| {
        b.iter(|| mulaw::decode_into(black_box(&ulaw), &mut pcm))
    });
    let mut up = Resampler::new(8_000, 16_000).unwrap();
    let mut out = Vec::with_capacity(ENGINE_FRAME * 2);
    g.bench_function("resample_8k_to_16k", |b| {
        b.iter(|| {
            out.clear();
            up.process(black_box(&frame), &mut out);
        })
    });
    let voice16 = testsignal::voice(16_000, 1_000, 2);
    let frame16 = &voice16[8_000..8_000 + ENGINE_FRAME];
    let mut vad = EarshotVad::new();
    g.bench_function("earshot_vad_320", |b| {
        b.iter(|| vad.speech_probability(black_box(frame16)))
    });
    g.finish();
}

fn outbound(c: &mut Criterion) {
    let tts = testsignal::voice(22_050, 1_000, 3);
    let chunk = &tts[..441]; // 20 ms at 22.05 kHz
    let mut g = c.benchmark_group("outbound_frame");
    let mut down = Resampler::new(22_050, 8_000).unwrap();
    let mut out = Vec::with_capacity(PHONE_FRAME * 2);
    g.bench_function("resample_22050_to_8k", |b| {
        b.iter(|| {
            out.clear();
            down.process(black_box(chunk), &mut out);
        })
    });
    let pcm = testsignal::voice(PHONE_RATE, 100, 4);
    let mut ulaw = Vec::with_capacity(PHONE_FRAME);
    g.bench_function("mulaw_encode_160", |b| {
        b.iter(|| mulaw::encode_into(black_box(&pcm[..PHONE_FRAME]), &mut ulaw))
    });
    let mut json = String::with_capacity(300);
    g.bench_function("twilio_media_json", |b| {
        b.iter(|| protocol::write_media(black_box("MZ0123"), black_box(&ulaw), &mut json))
    });
    g.finish();
}

fn conversation(c: &mut Criterion) {
    let mut g = c.benchmark_group("conversation_core");
    let voice = testsignal::voice(PHONE_RATE, 60_000, 5);
    // Listening: one caller frame through resampling, VAD and endpointing.
    g.bench_function("caller_frame_listening", |b| {
        let mut conv =
            Conversation::new(ConversationConfig::default(), Box::new(EarshotVad::new())).unwrap();
        let mut now = Duration::ZERO;
        let mut i = 0usize;
        b.iter(|| {
            let at = (i * PHONE_FRAME) % (voice.len() - PHONE_FRAME);
            conv.handle_input(now, Input::CallerAudio(&voice[at..at + PHONE_FRAME]));
            while let Some(o) = conv.poll_output() {
                black_box(o);
            }
            now += Duration::from_millis(20);
            i += 1;
        })
    });
    // Speaking: a caller frame of silence plus one agent frame released (and marks handled).
    g.bench_function("frame_while_speaking", |b| {
        let mut conv =
            Conversation::new(ConversationConfig::default(), Box::new(EarshotVad::new())).unwrap();
        let silence = [0i16; PHONE_FRAME];
        let tone: Vec<i16> = (0..PHONE_RATE as usize * 2)
            .map(|n| ((n as f32 * 0.35).sin() * 6_000.0) as i16)
            .collect();
        let mut now = Duration::ZERO;
        conv.handle_input(now, Input::Start);
        // Keep the greeting's single segment fed with audio forever.
        b.iter(|| {
            if conv.stats().frames_sent.is_multiple_of(100) {
                conv.handle_input(
                    now,
                    Input::SpeechAudio {
                        segment: SegmentId(0),
                        samples: &tone,
                    },
                );
            }
            conv.handle_input(now, Input::CallerAudio(&silence));
            while let Some(o) = conv.poll_output() {
                black_box(o);
            }
            now += Duration::from_millis(20);
        })
    });
    g.finish();
}

criterion_group!(benches, inbound, outbound, conversation);
criterion_main!(benches);
