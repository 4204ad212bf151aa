"""Evaluation: Fréchet distance, feature extractors, reference statistics, KID, precision/recall.

Library entry points (numpy in, plain data out; export's FID gate scores ONNX images through them):
``fid.frechet_distance``, ``stats.FeatureStats`` / ``stats.RefStats`` / ``stats.load_ref`` /
``stats.check_compatible``, ``features.get_extractor``, ``score.score_images``,
``score.score_generator``, ``online.OnlineFD``. The CLI is ``gan-eval`` (``training.eval.cli``).
"""
