import av
import numpy as np
import pytest

from wildswarm.errors import VideoError
from wildswarm.pipeline import video
from wildswarm.pipeline.video import VideoWriter, probe, read_frames, sample_step


def mux(container, stream, images) -> None:
    """Encode RGB ``images`` into ``stream`` of ``container``, and flush the encoder."""
    for image in images:
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def test_probe_reads_the_header(make_video):
    info = probe(make_video(frames=12, size=(160, 96), fps=10))
    assert (info.width, info.height, info.frames) == (160, 96, 12)
    assert info.fps == pytest.approx(10)
    assert info.codec == "h264"


@pytest.mark.parametrize("source,fps,step", [(24, 5, 4.8), (10, 0, 1.0), (10, 30, 1.0), (30, 10, 3.0)])
def test_sample_step(source, fps, step):
    assert sample_step(source, fps) == pytest.approx(step)


def test_sampling_decodes_once_on_the_time_grid(make_video):
    video = make_video(frames=20, fps=10)
    frames = list(read_frames(video, fps=2.5))
    assert [f.index for f in frames] == [0, 4, 8, 12, 16]
    assert probe(video).sampled(2.5) == len(frames)
    assert frames[0].image.shape == (96, 160, 3) and frames[0].image.dtype == np.uint8


def test_fps_zero_keeps_every_frame(make_video):
    assert len(list(read_frames(make_video(frames=7), fps=0))) == 7


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "nope.mp4")


def test_directory_is_not_a_video(tmp_path):
    with pytest.raises(VideoError, match="not a regular file"):
        probe(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe(tmp_path / "e.mp4")


def test_text_file_named_mp4(tmp_path):
    (tmp_path / "t.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="not a readable video"):
        probe(tmp_path / "t.mp4")


def test_random_bytes(tmp_path):
    (tmp_path / "r.mp4").write_bytes(np.random.default_rng(1).bytes(50_000))
    with pytest.raises(VideoError):
        probe(tmp_path / "r.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "a.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoError, match="no video stream"):
        probe(path)


def _cut_at_packet(data: bytes, path, keep: int) -> int:
    """Where the ``keep``-th frame's data ends in ``data`` (an MP4 whose index comes first)."""
    path.write_bytes(data)
    with av.open(str(path)) as c:
        entries = c.streams.video[0].index_entries
        return entries[keep - 1].pos + entries[keep - 1].size


@pytest.mark.parametrize("cut", ["half", "mid-packet", "packet boundary"])
@pytest.mark.parametrize("threads", [1, 0])
def test_a_cut_off_video_is_refused_at_probe_and_decode_not_analysed_in_part(make_video, tmp_path, cut, threads):
    """A camera file cut short (power lost, a copy broken off) keeps its index (faststart) but not all of
    its frames. FFmpeg then just stops early (at a packet boundary) or its threaded decoder swallows the
    broken packet: the video was analysed in part and reported done. It must fail with one clear line."""
    data = make_video(frames=40, size=(320, 192)).read_bytes()
    whole = tmp_path / "whole.mp4"
    end = {"half": len(data) // 2, "mid-packet": _cut_at_packet(data, whole, 20) - 7,
           "packet boundary": _cut_at_packet(data, whole, 20)}[cut]
    short = tmp_path / "cut.mp4"
    short.write_bytes(data[:end])
    with pytest.raises(VideoError, match=r"cut\.mp4: .*truncated.* of 40 frames"):
        probe(short)
    with pytest.raises(VideoError, match=r"cut\.mp4: .*truncated"):
        list(read_frames(short, fps=0, threads=threads))


def test_a_cut_off_fragmented_mp4_is_refused_not_analysed_in_part(tmp_path):
    """A fragmented MP4 (moov first, then moof+mdat pairs: what cameras and recorders write so that a cut
    recording survives) cut mid-fragment: its stream counts no frames in the header, so the check for a
    cut-off file was skipped, and the frames of the last fragment were dropped without a word: analysed
    in part and reported done, as the index-first MP4 was before."""
    from fractions import Fraction
    path = tmp_path / "frag.mp4"
    with av.open(str(path), "w", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}) as c:
        st = c.add_stream("libx264", rate=Fraction(10), options={"g": "30"})
        st.width, st.height, st.pix_fmt = 160, 96, "yuv420p"
        rng = np.random.default_rng(0)
        mux(c, st, (rng.integers(0, 255, (96, 160, 3), np.uint8) for _ in range(120)))
    assert probe(path).frames == len(list(read_frames(path, 0))) == 120     # whole: not called truncated
    short = tmp_path / "cut.mp4"
    short.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(VideoError, match=r"cut\.mp4: .*truncated"):
        probe(short)
    with pytest.raises(VideoError, match=r"cut\.mp4: .*truncated"):
        list(read_frames(short, fps=0))


@pytest.mark.parametrize("suffix, codec", [(".mkv", "libx264"), (".avi", "mpeg4")])
def test_a_cut_off_copy_without_an_index_is_refused_where_its_header_promises_more(tmp_path, suffix, codec):
    """Matroska and AVI keep no index that survives a copy broken off (MKV's cues and AVI's idx1 come last),
    but their headers keep the whole video's duration or frame count: a cut copy dropped straight into
    input/ was analysed up to the cut and reported done (187 of 600 frames), its results silently short."""
    from kit.videos import write_video
    whole = write_video(tmp_path / f"whole{suffix}", frames=300, size=(96, 64), fps=10, codec=codec)
    assert len(list(read_frames(whole, 0))) == 300                        # whole: not called truncated
    cut = tmp_path / "cut.mp4"                                             # named .mp4, as a camera's copy may be
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 5])
    with pytest.raises(VideoError, match=r"cut\.mp4: video is truncated: its frames end at \d+\.\d s of the 30\.0 s"):
        list(read_frames(cut, fps=5))
    first_segment = list(read_frames(cut, fps=5, first=0, stop=20))      # a segment before the cut reads on
    assert len(first_segment) == 20
    with pytest.raises(VideoError, match="truncated"):                    # the segment that reaches the end
        list(read_frames(cut, fps=5, first=40))


@pytest.mark.parametrize("suffix, codec", [(".ts", "libx264"), (".mkv", "libx264"), (".avi", "mpeg4"),
                                           (".mov", "mpeg4")])
def test_whole_videos_of_other_containers_are_not_called_truncated(tmp_path, suffix, codec):
    from kit.videos import write_video
    path = write_video(tmp_path / f"whole{suffix}", frames=75, size=(96, 64), fps=25, codec=codec)
    assert len(list(read_frames(path, 0))) == 75 and len(list(read_frames(path, 5, first=3))) == 12


def test_a_whole_matroska_whose_audio_outlasts_its_video_is_not_called_truncated(tmp_path):
    """The container's duration is its longest track's (12 s of audio); the video track's own is 5 s."""
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as c:
        v, a = c.add_stream("libx264", rate=10), c.add_stream("aac", rate=16000)
        v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
        mux(c, v, (np.full((64, 96, 3), i * 4, np.uint8) for i in range(50)))
        for i in range(16000 * 12 // 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            for pk in a.encode(f):
                c.mux(pk)
        for pk in a.encode():
            c.mux(pk)
    assert len(list(read_frames(path, 0))) == 50


def test_a_whole_video_is_not_called_truncated(make_video):
    video = make_video(frames=40, size=(320, 192))
    assert probe(video).frames == 40
    assert len(list(read_frames(video, fps=0))) == 40


def test_writer_makes_browser_playable_h264(tmp_path):
    out = tmp_path / "o.mp4"
    with VideoWriter(out, 5, 161, 97) as w:  # odd sizes are trimmed to even for yuv420p
        for i in range(6):
            w.write(np.full((97, 161, 3), i * 40, np.uint8))
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.codec_context.width, s.codec_context.height) == (160, 96)
        assert sum(1 for _ in c.decode(s)) == 6
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096)


@pytest.mark.parametrize("threads", [1, 0])
def test_writer_encodes_in_the_threads_it_is_given(tmp_path, threads):
    out = tmp_path / "o.mp4"
    with VideoWriter(out, 5, 64, 48, threads=threads) as w:
        assert w._stream.codec_context.thread_count == threads
        for i in range(4):
            w.write(np.full((48, 64, 3), i * 40, np.uint8))
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 4


def test_reader_decodes_in_one_thread_where_asked(tmp_path, monkeypatch):
    """One decoder thread where asked (a CPU node, stages.codec_threads), FFmpeg's own choice by
    default; the same frames either way."""
    out = tmp_path / "o.mp4"
    with VideoWriter(out, 5, 64, 48) as w:
        for i in range(6):
            w.write(np.full((48, 64, 3), i * 40, np.uint8))
    seen = []
    real_open = video._open

    def spying_open(path):
        container = real_open(path)
        seen.append(container.streams.video[0].codec_context)
        return container

    monkeypatch.setattr(video, "_open", spying_open)
    frames = [f.image for f in video.read_frames(out, 0, threads=1)]
    assert seen and all(c.thread_count == 1 for c in seen)
    assert len(frames) == 6
    monkeypatch.setattr(video, "_open", real_open)
    assert all(np.array_equal(a, b.image) for a, b in zip(frames, video.read_frames(out, 0)))


def test_frame_times_count_from_the_start_of_the_stream_as_frame_numbers_do(tmp_path):
    """A stream whose first frame is stamped 10 s (a clip cut from a longer recording, some cameras):
    tracks took the frames' raw time stamps (first seen at 10 s) while every table and export counts
    frame / rate from 0, so one export's animal events came 10 s later than its detections."""
    from fractions import Fraction
    tb = Fraction(1, 1000)
    path = tmp_path / "offset.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt, st.time_base = 160, 96, "yuv420p", tb
        for i in range(20):
            f = av.VideoFrame.from_ndarray(np.full((96, 160, 3), i * 6, np.uint8), format="rgb24")
            f.pts, f.time_base = 10_000 + 100 * i, tb
            for pk in st.encode(f):
                c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    whole = list(read_frames(path, 0))
    assert [f.index for f in whole] == list(range(20))
    assert [f.time for f in whole] == pytest.approx([i / 10 for i in range(20)], abs=1e-6)
    late = list(read_frames(path, 0, first=12, stop=15))
    assert [(f.index, f.time) for f in late] == [(f.index, f.time) for f in whole[12:15]]


@pytest.mark.parametrize("matrix,turns", [((0, 65536, 0, -65536, 0, 0), -1), ((0, -65536, 0, 65536, 0, 0), 1),
                                          ((-65536, 0, 0, 0, -65536, 0), 2)])
def test_a_phone_clip_recorded_upright_is_analysed_upright(tmp_path, matrix, turns):
    """Phones store a portrait clip as landscape frames and a display matrix that turns them (MP4 tkhd). The
    matrix was ignored: animals analysed on their side, labeled.mp4 sideways beside the source, keypoints in
    the stored frame's coordinates. Frames now come turned as the player shows them, and probe says so."""
    import struct
    from kit.videos import write_video
    coded = np.zeros((96, 160, 3), np.uint8)
    coded[:16, :16] = 255                                            # a mark in the stored frame's top left
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 160, 96, "yuv420p"
        for _ in range(3):
            for pk in st.encode(av.VideoFrame.from_ndarray(coded, format="rgb24")):
                c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd") + 44                                     # the matrix of a version 0 track header
    data[at:at + 36] = struct.pack(">9i", *matrix, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    shown = np.rot90(coded, turns)                                   # what a player shows
    info = probe(path)
    assert (info.height, info.width) == shown.shape[:2]
    frames = list(read_frames(path, 0))
    assert len(frames) == 3 and frames[0].image.shape == shown.shape
    assert np.abs(frames[0].image.astype(int) - shown).mean() < 8
    assert probe(write_video(tmp_path / "plain.mp4")).width == 160   # no matrix: as stored


def test_a_segment_of_a_stream_whose_seek_lands_on_no_keyframe_is_decoded_not_left_empty(tmp_path):
    """An MPEG-TS stream (a camera's .ts renamed .mp4) with one keyframe, at its start: FFmpeg's seek
    to a later frame lands where no keyframe follows, the decoder shows nothing, and the segment came
    back empty, without an error: a long video was analysed in its first segment only and reported done."""
    path = tmp_path / "one-gop.mp4"
    with av.open(str(path), "w", format="mpegts") as c:
        st = c.add_stream("libx264", rate=10, options={"g": "1000"})
        st.width, st.height, st.pix_fmt = 160, 96, "yuv420p"
        mux(c, st, (np.full((96, 160, 3), i * 4, np.uint8) for i in range(60)))
    whole = list(read_frames(path, 0))
    assert len(whole) == probe(path).frames == 60
    late = list(read_frames(path, 0, first=20, stop=25))
    assert [(f.index, f.time) for f in late] == [(f.index, f.time) for f in whole[20:25]]


def test_a_video_too_small_to_analyse_is_refused_by_probe(tmp_path):
    """A frame a pixel wide: the annotated video's encoder (even sizes) failed with PyAV's ArgumentError,
    which the worker took for a passing error and tried again, and again."""
    path = tmp_path / "sliver.avi"
    with av.open(str(path), "w") as c:
        st = c.add_stream("rawvideo", rate=10)
        st.width, st.height, st.pix_fmt = 1, 48, "rgb24"
        mux(c, st, (np.full((48, 1, 3), i * 40, np.uint8) for i in range(5)))
    with pytest.raises(VideoError, match=r"sliver\.avi: frames of 1x48 pixels are too small to analyse"):
        probe(path)


def test_a_date_tag_without_a_time_of_day_is_no_recording_time(tmp_path):
    """Audit: an MP4 whose only date is ``©day`` of a day alone (``2026-07-03``, as taggers write it) was read
    as recorded at 2026-07-03T00:00:00+00:00: midnight UTC, invented. The Camtrap DP export then never asked
    for the recording time, and placed the video and every animal in it at midnight (03:00 in Kenya); NWB's
    session started there. A day alone is no time of recording; a tag with its time of day still is one.
    And a first tag that says nothing (a re-encoder's 1970 creation_time, a day alone) no longer hides a
    later one that does."""
    from kit.videos import write_video
    from wildswarm.pipeline.media_tags import media_metadata
    plain = write_video(tmp_path / "plain.mp4", frames=4)

    def tagged(name: str, **tags):
        out = tmp_path / name
        with av.open(str(plain)) as src, av.open(str(out), "w", options={"movflags": "use_metadata_tags"}) as dst:
            dst.metadata.update(tags)
            stream = dst.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    dst.mux(packet)
        return out

    assert "creation_time" not in media_metadata(tagged("day.mp4", date="2026-07-03"))
    timed = media_metadata(tagged("timed.mp4", date="2026-07-03T05:12:00+03:00"))
    assert timed["creation_time"] == "2026-07-03T05:12:00+03:00"
    for first in ("1970-01-01T00:00:00.000000Z", "2026-07-03", "last tuesday"):
        behind = media_metadata(tagged("behind.mp4", creation_time=first, date="2026-07-03T05:12:00+03:00"))
        assert behind.get("creation_time") == "2026-07-03T05:12:00+03:00", first
