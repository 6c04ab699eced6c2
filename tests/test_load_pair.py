"""The encoder-to-tower policy is written once (avlegrad.models.load_pair): evaluation, localize
and the web app load the same tower for the same arguments, and refuse the same wrong pair."""
import pytest
import torch

import avlegrad.models
from avlegrad import app
from avlegrad.eval.run import EvalOptions, _load_models
from avlegrad.localize import Localizer
from avlegrad.world_clip import AUDIO_FILE, CLIP_FILE, CONFIG_FILE, WORLD_CHECKPOINTS

pytestmark = pytest.mark.skipif(not (WORLD_CHECKPOINTS / AUDIO_FILE).is_file(), reason="the world models are absent")
CPU = torch.device("cpu")


@pytest.fixture
def towers(monkeypatch):
    """Every tower load_clip is asked for: (name, pretrained, model_cfg, init_seed)."""
    calls, real = [], avlegrad.models.load_clip

    def spy(name, pretrained=None, device="cpu", model_cfg=None, init_seed=0):
        calls.append((name, pretrained, model_cfg, init_seed))
        return real(name, pretrained, device=device, model_cfg=model_cfg, init_seed=init_seed)

    monkeypatch.setattr(avlegrad.models, "load_clip", spy)
    return calls


def three_ways(audio_encoder, model, pretrained):
    """The tower each entry point loads for the same arguments, and its name there."""
    eval_model, _, eval_name, _, _ = _load_models(
        EvalOptions(audio_encoder=audio_encoder, model=model, pretrained=pretrained,
                    target="audio" if audio_encoder else "text"), CPU)
    localizer = Localizer.from_names(audio_encoder=audio_encoder, target_text=None if audio_encoder else "a dog",
                                     model=model, pretrained=pretrained, device="cpu")
    tower = "auto" if model is None and pretrained is None else f"{model}:{pretrained}"
    models = app.load_models(audio_encoder or app.NO_AUDIO, tower)
    return [eval_model, localizer.model, models.clip], [eval_name, models.model_name]


@pytest.mark.parametrize("audio, model, pretrained", [
    (str(WORLD_CHECKPOINTS / AUDIO_FILE), None, None),  # the encoder's own tower (its clip_tower_spec)
    (None, str(WORLD_CHECKPOINTS / CONFIG_FILE), str(WORLD_CHECKPOINTS / CLIP_FILE)),  # a tower alone
])
def test_eval_localize_and_the_app_load_the_same_tower(towers, audio, model, pretrained):
    clips, names = three_ways(audio, model, pretrained)
    assert len(towers) == 3 and towers[0] == towers[1] == towers[2], towers
    assert len(set(names)) == 1
    reference = clips[0].state_dict()
    for clip in clips[1:]:
        state = clip.state_dict()
        assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


def test_a_tower_that_is_not_the_encoders_is_refused_by_all_three(towers):
    audio = str(WORLD_CHECKPOINTS / AUDIO_FILE)
    with pytest.raises(ValueError) as from_eval:
        _load_models(EvalOptions(audio_encoder=audio, model="ViT-B-32", pretrained="openai", target="audio"), CPU)
    with pytest.raises(ValueError) as from_localize:
        Localizer.from_names(audio_encoder=audio, model="ViT-B-32", pretrained="openai", device="cpu")
    with pytest.raises(app.UserError) as from_app:
        app.load_models(audio, "ViT-B-32:openai")
    assert str(from_eval.value) == str(from_localize.value) and str(from_eval.value) in str(from_app.value)
    assert towers == []  # refused before any tower is loaded (or downloaded)
