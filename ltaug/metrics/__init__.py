"""Generator metrics: FID / KID / IS (clean-fid's Inception, offline weights), blocked precision / recall / density
/ coverage, and overlap diagnostics with a reference classifier."""

from ltaug.config.evaluate import parse_metrics
from ltaug.metrics.evaluate import evaluate, load_generated
from ltaug.metrics.fid import feature_stats, fid_from_feats, frechet_distance, inception_score, kid
from ltaug.metrics.inception import extract, load_feature_net
from ltaug.metrics.overlap import leakage_summary, overlap_matrix, plot_overlap
from ltaug.metrics.prdc import knn_radii, prdc, prdc_dense


def fid_from_images(images_a, images_b_or_stats, *, inception_weights=None, mode="clean", device="cpu",
                    batch_size=64, progress=False) -> float:
    """FID of uint8 images [N, H, W, C] against other images or reference statistics (mu [2048], sigma [2048, 2048])."""
    net = load_feature_net(inception_weights, mode=mode, device=device)
    fa, _ = extract(net, images_a, batch_size=batch_size, progress=progress)
    if isinstance(images_b_or_stats, tuple):
        mu, sigma = images_b_or_stats
    else:
        fb, _ = extract(net, images_b_or_stats, batch_size=batch_size, progress=progress)
        mu, sigma = feature_stats(fb)
    return fid_from_feats(fa, mu, sigma)


__all__ = ["evaluate", "load_generated", "parse_metrics", "feature_stats", "fid_from_feats", "frechet_distance",
           "inception_score", "kid", "extract", "load_feature_net", "leakage_summary", "overlap_matrix",
           "plot_overlap", "knn_radii", "prdc", "prdc_dense", "fid_from_images"]
