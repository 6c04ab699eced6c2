"""Datasets, media decoding and the sample record they all share."""
from .media import MediaError, load_audio, load_frame, load_image, video_info, write_audio, write_video
from .record import ClipFiles, ClipRecord, SkippedClip, load_clip_media, locate_clip
from .annotations import AnnotationNotFoundError, AnnotationReport, BoxAnnotation, cache_dir
from .datasets import ClipDataset, collate_clips, create_dataset
from .registry import dataset_spec, list_datasets, register_dataset
from .synthetic import generate_synthetic
from . import csv_boxes  # noqa: F401,E402  (registers "csv-boxes")
