"""The video-score rule: how the probabilities of a video's face crops become its frame and video scores.

One home for the rule, used by evaluation (``dfd.engine.metrics``: validation, test, ``predictions.parquet``,
threshold calibration in ``dfd-export``) and by ``dfd-predict`` alike, so a video scores the same in both.

Every rule is two-level: a frame's score aggregates the faces found in that frame, and a video's score is the
mean of its frames' scores.

* ``max_face_mean`` (default): frame = the *max* over its faces. The DFDC winners' and SBI's test rule: one
  manipulated face among real bystanders makes the frame fake.
* ``mean``: frame = the mean over its faces.
* ``largest_face``: the video's main face only (track 0: the face track with the largest summed box area over
  the sampled frames, see :func:`dfd.faces.track.track_faces`); frames without it are left out.

With one face per frame (every ``extract.choice`` but ``all``) the three rules give the same numbers: the mean
of the frame probabilities. Clip models score one clip per video: its score is the video's score.

Imports torch only: ``dfd-predict`` runs it on an organiser's server.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dfd.errors import ConfigError

VIDEO_SCORES = ("max_face_mean", "mean", "largest_face")
DEFAULT_VIDEO_SCORE = "max_face_mean"
#: What each rule computes, in words (results.json and preprocess.json record it beside the rule's name).
DESCRIPTIONS = {
    "max_face_mean": "mean over frames of the max over the frame's faces",
    "mean": "mean over frames of the mean over the frame's faces",
    "largest_face": "mean over frames of the video's main face (track 0: largest summed face area)",
}


class VideoScoreError(ConfigError):
    """An unknown video-score rule (a user error: one line, exit 2)."""


def check_video_score(rule: str | None, where: str = "data.video_score") -> str:
    """The rule, validated (None: the default)."""
    rule = DEFAULT_VIDEO_SCORE if rule is None else str(rule)
    if rule not in VIDEO_SCORES:
        raise VideoScoreError(f"{where}={rule!r} is not a video-score rule; choose one of {', '.join(VIDEO_SCORES)}")
    return rule


@dataclass
class Scores:
    """Frame and video scores of a set of crops.

    ``frame_prob`` (float64), ``frame_video`` and ``frame_row`` (the first input row of each frame, for its
    label and method) have one entry per scored frame, in (video, frame) order; ``video_prob`` (float64),
    ``videos`` (sorted video codes) and ``video_row`` (first input row of each video) one per video.
    """

    frame_prob: torch.Tensor
    frame_video: torch.Tensor
    frame_row: torch.Tensor
    video_prob: torch.Tensor
    videos: torch.Tensor
    video_row: torch.Tensor


def score(prob: torch.Tensor, video: torch.Tensor, frame: torch.Tensor | None = None,
          track: torch.Tensor | None = None, rule: str = DEFAULT_VIDEO_SCORE) -> Scores:
    """Apply a video-score rule to crop probabilities (any row order; the result does not depend on it).

    ``video``: a code per crop (one video: zeros); ``frame``: the crop's frame number (None: every crop is its
    own frame); ``track``: the crop's face id (None: 0). Sums run in float64 over rows sorted by (video, frame,
    track), so the same crops give bit-identical scores on 1 or N processes and in dfd-predict.
    """
    rule = check_video_score(rule)
    n = len(prob)
    p = prob.detach().double().flatten().cpu()
    video = video.detach().long().flatten().cpu()
    frame = torch.arange(n) if frame is None else frame.detach().long().flatten().cpu()
    track = torch.zeros(n, dtype=torch.long) if track is None else track.detach().long().flatten().cpu()
    empty = torch.zeros(0, dtype=torch.long)
    if n == 0:
        return Scores(p, empty, empty, p, empty, empty)
    # Stable lexicographic sort by (video, frame, track); torch has no lexsort, so chain stable sorts.
    order = torch.arange(n)
    for key in (track, frame, video):
        order = order[torch.sort(key[order], stable=True).indices]
    p, video, frame, track = p[order], video[order], frame[order], track[order]

    videos, vinv = torch.unique_consecutive(video, return_inverse=True)
    if rule == "largest_face":
        main = torch.full((len(videos),), torch.iinfo(torch.long).max).scatter_reduce_(0, vinv, track, "amin")
        keep = track == main[vinv]
        p, video, frame, track, order, vinv = p[keep], video[keep], frame[keep], track[keep], order[keep], vinv[keep]
    # Frames: consecutive runs of equal (video, frame).
    new = torch.ones(len(p), dtype=torch.bool)
    new[1:] = (video[1:] != video[:-1]) | (frame[1:] != frame[:-1])
    finv = torch.cumsum(new.long(), 0) - 1
    nf = int(finv[-1]) + 1
    if rule == "max_face_mean":
        fprob = torch.full((nf,), -torch.inf, dtype=torch.float64).scatter_reduce_(0, finv, p, "amax")
    else:  # mean over the frame's faces (largest_face: one face per frame is left)
        fsum = torch.zeros(nf, dtype=torch.float64).index_add_(0, finv, p)
        fcount = torch.zeros(nf, dtype=torch.float64).index_add_(0, finv, torch.ones_like(p))
        fprob = fsum / fcount
    first = torch.nonzero(new).flatten()
    fvideo_code = vinv[first]
    vsum = torch.zeros(len(videos), dtype=torch.float64).index_add_(0, fvideo_code, fprob)
    vcount = torch.zeros(len(videos), dtype=torch.float64).index_add_(0, fvideo_code, torch.ones_like(fprob))
    vfirst = torch.full((len(videos),), n, dtype=torch.long).scatter_reduce_(0, fvideo_code, order[first], "amin")
    return Scores(fprob, videos[fvideo_code], order[first], vsum / vcount, videos, vfirst)
