"""Perception Encoder Audio-Visual (transformers PeAudioVideoModel) on random weights, tiny config:
the frame tower's replayed embedding equals transformers' own forward; the audio encoder equals
transformers' feature extractor + audio path; LeGrad (one frame) and the frames x patches maps
equal a slow reference written here (frame tower from timm's modules with attention materialised,
the temporal part run by transformers' own video encoder with the frames' head outputs fed in,
one autograd.grad per layer); the pairing policy; weights from a local folder; the offline error."""
import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "PeAudioVideoModel"):
    pytest.skip("this transformers has no PeAudioVideoModel", allow_module_level=True)

from avlegrad import LeGrad  # noqa: E402
from avlegrad.audio import create_audio_encoder  # noqa: E402
from avlegrad.audio.factory import CheckpointError, test_config  # noqa: E402
from avlegrad.audio.pe_av import build_random_model, tiny_config  # noqa: E402
from avlegrad.explain import legrad_video  # noqa: E402
from avlegrad.explain.adapters import adapter_for  # noqa: E402
from avlegrad.explain.adapters.pe_av import PeAVFrameTower  # noqa: E402
from avlegrad.models import WeightsUnavailableError, load_clip, load_pair  # noqa: E402
from conftest import assert_model_unchanged, model_snapshot  # noqa: E402
from test_legrad_eva import reference_tokens  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return PeAVFrameTower.example_model()[0]  # every parameter perturbed, eval mode


def trunk_of(model):
    return model.video_model.video_encoder.embedder.vision_model.timm_model


class _Logits(nn.Module):
    """Stands in for the frame tower: returns given head outputs, so transformers' own video
    encoder runs its temporal part on them."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, pixel_values):
        return SimpleNamespace(logits=self.logits)


def transformers_video(model, logits):
    """transformers' own video embedding (video_head of PeVideoEncoder's pooled output) of videos
    whose frames' head outputs are ``logits`` ``[B, T, C]`` (autograd flows back to them)."""
    def shallow(module):  # a copy sharing the parameters, whose submodules can be replaced
        twin = copy.copy(module)
        twin._modules = dict(module._modules)
        return twin

    video = shallow(model.video_model)
    video.video_encoder = shallow(video.video_encoder)
    video.video_encoder.embedder = shallow(video.video_encoder.embedder)
    B, T, C = logits.shape
    video.video_encoder.embedder.vision_model = _Logits(logits.reshape(B * T, C))
    dummy = logits.new_zeros(B, T, 1, 1, 1)
    return video.video_head(video.video_encoder(pixel_values_videos=dummy).pooler_output)


def reference_pooled(t, tokens):
    """The frame tower's attention pooler over one frame's block tokens ``[1, N, C]`` with its
    attention ``A`` materialised: (pooled features after fc_norm ``[1, F]``, A ``[1, heads, 1, N]``)."""
    pool = t.attn_pool
    q = pool.q(pool.latent).reshape(1, 1, pool.num_heads, -1).transpose(1, 2)
    kv = pool.kv(tokens).reshape(1, tokens.shape[1], 2, pool.num_heads, -1)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    A = torch.softmax(q @ k.transpose(-1, -2) * pool.head_dim ** -0.5, dim=-1).detach().requires_grad_(True)
    y = pool.proj((A @ v).transpose(1, 2).reshape(1, 1, -1))
    y = (y + pool.mlp(pool.norm(y)))[:, 0]
    return t.fc_norm(y), A


def reference_video_legrad(model, frames, target, layer_index):
    """One video ``[T, 3, H, W]``, one target ``[D]`` -> maps ``[T, H, W]``, jointly min-max
    normalised: per explained layer, the score of the video embedding built from every frame's
    pooler at that layer, its gradient w.r.t. each frame's pooler attention (materialised)."""
    t = trunk_of(model)
    p = t.patch_embed.patch_size[0]
    gh, gw = frames.shape[-2] // p, frames.shape[-1] // p
    table = t.rope.get_embed()
    per_frame = [reference_tokens(t, f[None], table)[1] for f in frames]  # each block's output tokens
    L = len(t.blocks)
    total = 0
    for layer in range(layer_index % L, L):
        pooled = [reference_pooled(t, outputs[layer].detach()) for outputs in per_frame]
        logits = torch.stack([t.head(feats)[0] for feats, _ in pooled])[None]  # [1, T, C]
        s = F.normalize(transformers_video(model, logits), dim=-1)[0] @ (target / target.norm())
        grads = torch.autograd.grad(s, [A for _, A in pooled])
        e = torch.stack([g.clamp(min=0).mean(dim=1)[0, 0, t.num_prefix_tokens:] for g in grads])
        total = total + F.interpolate(e.reshape(len(frames), 1, gh, gw), scale_factor=p, mode="bilinear")[:, 0]
    return (total - total.min()) / (total.max() - total.min())


# ------------------------------------------------------------------ the frame tower
def test_replayed_frame_embedding_is_transformers_video_embedding(model):
    vit = adapter_for(model)
    assert isinstance(vit, PeAVFrameTower) and vit.embed_dim == 32
    assert isinstance(adapter_for(model.video_model), PeAVFrameTower)  # the video branch alone too
    frames = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        replayed = vit.replayed_forward(frames)
        # transformers' full audio-visual forward: its video_embeds of one-frame videos
        out = model(input_values=torch.randn(3, 1, 64), pixel_values_videos=frames[:, None])
        torch.testing.assert_close(replayed, out.video_embeds, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vit.model_forward(frames), out.video_embeds, atol=1e-5, rtol=1e-5)
        # several frames: the temporal part (frames_embedding) against transformers' video embedding
        video = torch.randn(2, 4, 3, 32, 32)
        features = vit.pre_logits(vit.tokens_before(video.flatten(0, 1), vit.num_layers)).reshape(2, 4, -1)
        out = model(input_values=torch.randn(2, 1, 64), pixel_values_videos=video)
        torch.testing.assert_close(vit.frames_embedding(features), out.video_embeds, atol=1e-5, rtol=1e-5)


def test_legrad_on_frames_matches_the_slow_reference_and_leaves_the_model_unchanged(model):
    before = model_snapshot(model)
    frames = torch.randn(2, 3, 32, 32)
    targets = torch.randn(2, 2, 32)
    maps = LeGrad(model, layer_index=-2)(frames, targets)
    assert maps.shape == (2, 2, 32, 32)
    for b in range(2):
        for k in range(2):
            ref = reference_video_legrad(model, frames[b:b + 1], targets[b, k], -2)[0]
            torch.testing.assert_close(maps[b, k], ref, atol=1e-4, rtol=1e-4)
    assert_model_unchanged(before, model_snapshot(model))


def test_frames_by_patches_maps_match_the_slow_reference(model):
    before = model_snapshot(model)
    videos = torch.randn(2, 3, 3, 32, 32)
    targets = torch.randn(2, 32)
    maps = legrad_video(model, videos, targets, layer_index=0)
    assert maps.shape == (2, 3, 32, 32) and maps.dtype == torch.float32
    for b in range(2):
        ref = reference_video_legrad(model, videos[b], targets[b], 0)
        torch.testing.assert_close(maps[b], ref, atol=1e-4, rtol=1e-4)
        assert maps[b].amax() == 1 and maps[b].amin() == 0  # one min-max over the video's frames
    # K targets per video: [B, K, T, H, W]; a one-frame video is the single-image call
    many = legrad_video(model, videos, torch.stack([targets, -targets], dim=1))
    assert many.shape == (2, 2, 3, 32, 32)
    torch.testing.assert_close(legrad_video(model, videos[:, :1], targets)[:, 0],
                               LeGrad(model)(videos[:, 0], targets), atol=1e-5, rtol=1e-5)
    assert_model_unchanged(before, model_snapshot(model))


def test_frames_by_patches_refuses_bad_input(model):
    from avlegrad.explain import UnsupportedModelError

    with pytest.raises(ValueError, match=r"videos must be a tensor \[B, T, 3, H, W\], got \(2, 3, 32, 32\)"):
        legrad_video(model, torch.randn(2, 3, 32, 32), torch.randn(2, 32))
    with pytest.raises(ValueError, match="got 2 videos but targets for 3"):
        legrad_video(model, torch.randn(2, 2, 3, 32, 32), torch.randn(3, 32))
    with pytest.raises(ValueError, match="width 16"):
        legrad_video(model, torch.randn(2, 2, 3, 32, 32), torch.randn(2, 16))
    bad = torch.randn(1, 2, 3, 32, 32)
    bad[0, 1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        legrad_video(model, bad, torch.randn(1, 32))
    assert legrad_video(model, torch.randn(0, 3, 3, 32, 32), torch.randn(0, 2, 32)).shape == (0, 2, 3, 32, 32)
    with torch.inference_mode():  # explained all the same (autograd is switched back on inside)
        assert legrad_video(model, torch.randn(1, 2, 3, 32, 32), torch.randn(1, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(UnsupportedModelError, match="video branch"):
        legrad_video(PeAVFrameTower.__mro__[1].example_model()[0], torch.randn(1, 1, 3, 32, 32), torch.randn(1, 10))


# ------------------------------------------------------------------ the audio encoder
def test_audio_encoder_is_transformers_audio_path():
    encoder = create_audio_encoder("pe-av", **test_config("pe-av"))
    reference = build_random_model(tiny_config())  # the same config and seed: the same weights
    assert encoder.sample_rate == 48000 and encoder.min_samples == 8 and encoder.embed_dim == 32
    waves = torch.randn(3, 101)  # not a multiple of the hop: reflect-padded as the feature extractor does
    extractor = transformers.PeAudioFeatureExtractor(sampling_rate=48000, hop_length=8)
    inputs = extractor([w.numpy() for w in waves], sampling_rate=48000, return_tensors="pt")
    with torch.no_grad():
        want = reference.get_audio_embeds(inputs["input_values"], inputs["padding_mask"])
        torch.testing.assert_close(encoder.encode(waves), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(encoder(waves), F.normalize(want, dim=-1), atol=1e-5, rtol=1e-5)
        # and the audio embedding of transformers' audio-visual forward
        out = reference(input_values=inputs["input_values"], pixel_values_videos=torch.randn(3, 1, 3, 32, 32),
                        padding_mask=inputs["padding_mask"])
        torch.testing.assert_close(encoder.encode(waves), out.audio_embeds, atol=1e-5, rtol=1e-5)
    assert "too short" in encoder.check_waveform(torch.randn(7))
    assert encoder.check_waveform(torch.randn(8)) is None


def test_pe_av_pairs_with_its_own_frame_tower():
    encoder = create_audio_encoder("pe-av", **test_config("pe-av"))
    pair = load_pair(encoder)
    assert type(pair.clip).__name__ == "PeVideoModel" and pair.cfg["size"] == (32, 32)
    assert pair.cfg["mean"] == (0.5, 0.5, 0.5) and pair.cfg["interpolation"] == "bilinear"
    reference = build_random_model(tiny_config()).video_model
    for (name, p), q in zip(pair.clip.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name
        assert not p.requires_grad
    frames = torch.randn(2, 3, 32, 32)
    maps = LeGrad(pair.clip)(frames, encoder(torch.randn(2, 400)))
    assert maps.shape == (2, 32, 32)
    with pytest.raises(ValueError, match="image space of CLIP 'facebook-pe-av-large'"):
        load_pair(encoder, model="ViT-B-16", pretrained="openai")


def test_building_prints_nothing_but_keeps_other_output(capsys, caplog):
    # transformers 5.24 prints an "[ERROR] ... not documented" line per PeVideoModel built (its own
    # docstring check); the README's PE-AV snippet printed it twice before the library dropped it
    encoder = create_audio_encoder("pe-av", **test_config("pe-av"))
    with caplog.at_level("WARNING", logger="avlegrad"):
        load_pair(encoder)
    assert capsys.readouterr().out == ""
    assert "the PE-AV frame tower of the given config (not facebook/pe-av-large's) has RANDOM weights" in caplog.text
    from avlegrad.audio.pe_av import _without_docstring_check_lines

    with _without_docstring_check_lines():
        print("[ERROR] `x` is part of f's signature, but not documented. Make sure to add it to the docstring of it")
        print("[ERROR] something else")
        print("kept")
    assert capsys.readouterr().out == "[ERROR] something else\nkept\n"


def test_weights_from_a_local_folder_and_the_offline_error(tmp_path, monkeypatch):
    import avlegrad.download

    saved = build_random_model(tiny_config(), seed=3)
    folder = tmp_path / "pe-av-tiny"
    saved.save_pretrained(folder)
    encoder = create_audio_encoder(str(folder))  # a checkpoint folder: claimed by pe-av
    assert encoder.registry_name == "pe-av" and encoder.clip_pretrained == str(folder.resolve())
    waves = torch.randn(2, 64)
    with torch.no_grad():
        want = saved.get_audio_embeds(waves[:, None], torch.ones(2, 64, dtype=torch.int32))
        torch.testing.assert_close(encoder.encode(waves), want, atol=1e-5, rtol=1e-5)
    tower, _ = load_clip(encoder.clip_model, encoder.clip_pretrained)
    for p, q in zip(tower.parameters(), saved.video_model.parameters()):
        assert torch.equal(p, q)
    (tmp_path / "other").mkdir()
    with pytest.raises(CheckpointError, match="is a folder no registered audio encoder reads"):
        create_audio_encoder(str(tmp_path / "other"))
    # offline, nothing cached: one line naming the model id and the local-path option
    monkeypatch.setattr(avlegrad.download, "hub_reachable", lambda: False)
    with pytest.raises(WeightsUnavailableError) as err:
        create_audio_encoder("pe-av", model_id="facebook/pe-av-not-cached")
    message = str(err.value)
    assert "\n" not in message and "facebook/pe-av-not-cached" in message and "checkpoint=FOLDER" in message


def test_text_targets_use_the_checkpoints_tokenizer_and_text_head(tmp_path):
    """``encode_text`` of a PE-AV tower (``--target text``): PeVideoModel.forward's text_video_embeds,
    tokenised by the tokenizer saved with the checkpoint (a tiny word-level one here)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from avlegrad.models import encode_text

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "dog", "guitar", "photo", "of"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                                     cls_token="[CLS]", sep_token="[SEP]")
    saved = build_random_model(tiny_config(), seed=4)
    folder = tmp_path / "pe-av-text"
    saved.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tower, _ = load_clip("facebook/pe-av-large", str(folder))
    prompts = ["a dog", "a photo of a guitar"]
    got = encode_text(tower, "facebook/pe-av-large", prompts)
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = saved.video_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                pixel_values_videos=torch.randn(2, 1, 3, 32, 32))
    assert got.shape == (2, 32)
    torch.testing.assert_close(got, out.text_video_embeds, atol=1e-5, rtol=1e-5)
    random_tower, _ = load_clip("facebook/pe-av-large", None, model_cfg=tiny_config())
    with pytest.raises(ValueError, match="has no tokenizer"):
        encode_text(random_tower, "facebook/pe-av-large", prompts)


def test_image_embedding_of_any_tower_is_its_own_forward(model):
    """``adapters.image_embedding`` (the extended sets' cosine confidence, the audio side's targets):
    PE-AV's one-frame ``video_embeds`` from transformers' full forward, a transformers CLIP's
    ``get_image_features``, open_clip's ``encode_image``."""
    import open_clip
    import transformers

    from avlegrad.explain.adapters import image_embedding

    frames = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(input_values=torch.randn(2, 1, 64), pixel_values_videos=frames[:, None])
        torch.testing.assert_close(image_embedding(model, frames), out.video_embeds, atol=1e-5, rtol=1e-5)
        cfg = transformers.CLIPConfig(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=32, patch_size=8),
            text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
            projection_dim=16)
        hf = transformers.CLIPModel(cfg).eval()
        expected = hf.get_image_features(pixel_values=frames)
        expected = getattr(expected, "pooler_output", expected)
        torch.testing.assert_close(image_embedding(hf, frames), expected, atol=1e-5, rtol=1e-5)
        oc = open_clip.create_model("ViT-B-32", pretrained=None).eval()
        images = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(image_embedding(oc, images), oc.encode_image(images).float())
