"""Audio encoders: mono waveforms -> L2-normalised embeddings in a named CLIP image space."""
from .base import AudioEncoder, crop_or_pad
from .clip_space import check_clip_pair
from .factory import (CheckpointError, TrainingContract, create_audio_encoder, list_audio_encoders,
                      load_checkpoint_file, register_audio_encoder, training_contract)
from .frontend import LogMel
from . import timm_encoder  # noqa: F401  (registers "timm")
from .timm_encoder import TimmAudioEncoder
from . import imagebind, wav2clip  # noqa: F401,E402  (registers "imagebind" and "wav2clip")
from . import waveform_cnn  # noqa: F401,E402  (registers "waveform-cnn")
from . import pe_av  # noqa: F401,E402  (registers "pe-av": Perception Encoder Audio-Visual, transformers)
