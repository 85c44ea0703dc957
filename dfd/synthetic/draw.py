"""The embedded synthetic dataset: procedurally drawn faces whose fakes carry real face-swap traces.

Why it exists: the main job, the tests and the cross-dataset demo must run on a fresh machine with no download.
So dfd draws its own faces (varied skin tones, face shapes, features, hair, backgrounds, poses, lighting and skin
texture) and makes fakes the way face-swap tools do: a face region taken from a *second* face (or a warped,
colour-shifted copy of the same face) is aligned on the target's landmarks, resampled (generator resolution:
the skin texture is lost), colour-mismatched and pasted through a soft face-shaped mask, leaving a blending seam.
The whole frame is then JPEG-compressed, reals and fakes alike, so compression alone is no cue.

Each *domain* is a different forgery pipeline (mask shape, seam softness, resampling, colour mismatch, JPEG
quality), standing in for different datasets: train on one domain, test on the others, and the cross-dataset
gap appears as it does with real data. Output is exactly what ``dfd-extract`` writes for a real dataset: face
crops with 5 landmarks, several frames per video, identity-disjoint splits, and a frame manifest.

Like FF++'s, every fake is made *from a real video of its split* (that video's frames, the face swapped) and
names it in the manifest column ``source_video`` (``data.pairing=source`` and the paired/unpaired subsets use
it); a fake shows its source's person (``identity``). Reals are drawn as before; fakes come from the reals
round-robin when they outnumber them (``fake_ratio`` > 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dfd.store.media import jpeg_roundtrip

GENERATOR_VERSION = 4  # bump when drawing changes, so stale caches are not reused (4: fakes made from real videos)

# Skin tones spanning light to dark (RGB), jittered per identity.
SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 165], [224, 172, 138], [198, 134, 100], [161, 102, 72], [120, 75, 52], [88, 56, 40]],
    np.float32,
)


@dataclass(frozen=True)
class Domain:
    """One forgery pipeline. Sizes are relative to the face width so they scale with the image size."""

    mask: str  # hull | ellipse | rect: the shape pasted through
    seam_blur: float  # Gaussian sigma of the mask edge, fraction of face width
    resample: float  # generator resolution as a fraction of the face size (lower = blurrier swap)
    colour_shift: float  # max per-channel colour mismatch of the pasted face (0-255 scale)
    jpeg: int  # JPEG quality applied to every frame (real and fake)
    source: str  # swap (a second identity) | self (a warped, colour-shifted copy of the target)
    checker: float = 0.0  # amplitude of the generator's up-sampling checkerboard (transposed-conv artefact)
    camera_blur: float = 0.0  # optical softness of the whole frame (px sigma at 64 px), reals and fakes alike
    sharpen: float = 0.0  # unsharp-mask amount applied to the generated face (post-processing hides blur)


DOMAINS: dict[str, Domain] = {
    # Low-resolution generator: the pasted face is blurry (lost skin texture), soft hull seam.
    "a": Domain(mask="hull", seam_blur=0.05, resample=0.45, colour_shift=6.0, jpeg=95, source="swap"),
    # Soft camera, full-resolution generator whose output is sharpened: here the fake face is *crisper* than the
    # real footage, the opposite of domain a's trace (a detector that learnt "blur = fake" fails here).
    "b": Domain(mask="ellipse", seam_blur=0.08, resample=1.0, colour_shift=4.0, jpeg=92, source="swap",
                checker=3.0, camera_blur=1.1, sharpen=2.5),
    # Poor colour transfer and a hard rectangular seam; mild resampling.
    "c": Domain(mask="rect", seam_blur=0.02, resample=0.75, colour_shift=24.0, jpeg=85, source="swap"),
    # Heavy compression hides most traces (a low-quality, "in the wild" domain).
    "d": Domain(mask="hull", seam_blur=0.09, resample=0.7, colour_shift=8.0, jpeg=55, source="swap"),
}


# --------------------------------------------------------------------------------------------- drawing
def _identity(rng: np.random.Generator) -> dict:
    """Random appearance parameters of one person."""
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.06) + rng.normal(0, 6, 3)
    return {
        "skin": np.clip(tone, 20, 255),
        "aspect": rng.uniform(1.15, 1.45),  # face height / width
        "eye_dx": rng.uniform(0.32, 0.42),
        "eye_y": rng.uniform(-0.22, -0.08),
        "eye_size": rng.uniform(0.09, 0.14),
        "iris": rng.choice([[60, 40, 20], [40, 90, 140], [70, 110, 60], [30, 25, 20]]).astype(np.float32),
        "brow": rng.uniform(0.02, 0.05),
        "nose_y": rng.uniform(0.12, 0.22),
        "mouth_y": rng.uniform(0.42, 0.55),
        "mouth_w": rng.uniform(0.22, 0.34),
        "lips": np.clip(tone * np.array([0.85, 0.5, 0.5]) + rng.normal(0, 10, 3), 0, 255),
        "hair": rng.choice([[20, 15, 10], [70, 45, 25], [150, 110, 60], [200, 180, 120], [110, 110, 110]])
        .astype(np.float32),
        "hair_h": rng.uniform(0.15, 0.45),
        "texture": rng.uniform(7.0, 12.0),  # skin micro-texture strength
    }


def _pose(rng: np.random.Generator, size: int) -> dict:
    """Where the face sits in a crop: extraction centres faces with a margin, with residual jitter."""
    return {
        "cx": size * rng.uniform(0.44, 0.56),
        "cy": size * rng.uniform(0.46, 0.56),
        "w": size * rng.uniform(0.30, 0.38),  # face half-width in pixels
        "roll": rng.uniform(-18, 18),
        "yaw": rng.uniform(-0.25, 0.25),
    }


def _jitter(pose: dict, rng: np.random.Generator, size: int) -> dict:
    """Small frame-to-frame motion within a video."""
    p = dict(pose)
    p["cx"] += rng.normal(0, 0.01 * size)
    p["cy"] += rng.normal(0, 0.01 * size)
    p["roll"] += rng.normal(0, 1.5)
    p["yaw"] = float(np.clip(p["yaw"] + rng.normal(0, 0.03), -0.35, 0.35))
    return p


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A gradient with soft blobs: backgrounds vary as much as faces do."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    angle = rng.uniform(0, np.pi)
    g = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]) / (abs(np.cos(angle)) + abs(np.sin(angle)))
    img = c0 + (c1 - c0) * g[..., None]
    for _ in range(rng.integers(2, 6)):
        centre = tuple(int(v) for v in rng.uniform(0, size, 2))
        cv2.circle(img, centre, int(rng.uniform(0.05, 0.3) * size), rng.uniform(0, 255, 3).tolist(), -1)
    return cv2.GaussianBlur(img, (0, 0), size * 0.03)


def _to_px(pose: dict, pts: np.ndarray, aspect: float) -> np.ndarray:
    """Face-frame points (x in half-widths, y in half-widths*aspect) -> pixel coordinates, with roll."""
    w = pose["w"]
    xy = np.stack([pts[:, 0] * w, pts[:, 1] * w * aspect], axis=1)
    th = np.deg2rad(pose["roll"])
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], np.float32)
    return xy @ rot.T + np.array([pose["cx"], pose["cy"]], np.float32)


def _landmarks(ident: dict, pose: dict) -> np.ndarray:
    """The 5 MTCNN-style points (left eye, right eye, nose, mouth left, mouth right) in pixels."""
    yaw = pose["yaw"]
    pts = np.array(
        [
            [-ident["eye_dx"] + 0.3 * yaw, ident["eye_y"]],
            [ident["eye_dx"] + 0.3 * yaw, ident["eye_y"]],
            [0.55 * yaw, ident["nose_y"]],
            [-ident["mouth_w"] + 0.35 * yaw, ident["mouth_y"]],
            [ident["mouth_w"] + 0.35 * yaw, ident["mouth_y"]],
        ],
        np.float32,
    )
    return _to_px(pose, pts, ident["aspect"])


def _draw_face(img: np.ndarray, ident: dict, pose: dict, rng: np.random.Generator) -> np.ndarray:
    """Draw hair, neck, face, features, lighting and skin texture onto ``img`` (float32, in place)."""
    size = img.shape[0]
    w, aspect, roll = pose["w"], ident["aspect"], pose["roll"]
    centre = (pose["cx"], pose["cy"])
    skin = ident["skin"].tolist()
    hair_c = _to_px(pose, np.array([[0.0, -0.35]], np.float32), aspect)[0]
    cv2.ellipse(img, _pt(hair_c), (int(w * 1.12), int(w * aspect * (0.75 + ident["hair_h"]))), roll, 0, 360,
                ident["hair"].tolist(), -1, cv2.LINE_AA)
    neck = _to_px(pose, np.array([[-0.45, 0.6], [0.45, 0.6], [0.55, 2.5], [-0.55, 2.5]], np.float32), aspect)
    cv2.fillConvexPoly(img, neck.astype(np.int32), (np.array(skin) * 0.8).tolist(), cv2.LINE_AA)

    face = np.zeros((size, size), np.float32)
    cv2.ellipse(face, _pt(centre), (int(w), int(w * aspect)), roll, 0, 360, 1.0, -1, cv2.LINE_AA)
    # Directional light: shading that varies over the face like a real 3D surface.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    la = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + 0.18 * (np.cos(la) * (xx - centre[0]) + np.sin(la) * (yy - centre[1])) / w
    shade -= 0.12 * (((xx - centre[0]) / w) ** 2 + ((yy - centre[1]) / (w * aspect)) ** 2)
    # Skin micro-texture: the high-frequency detail a generator at lower resolution cannot reproduce.
    texture = rng.normal(0, ident["texture"], (size, size, 1)).astype(np.float32)
    texture += cv2.GaussianBlur(rng.normal(0, ident["texture"], (size, size)).astype(np.float32), (0, 0), 1.2)[..., None]
    skin_img = np.array(skin, np.float32) * shade[..., None] + texture
    img[:] = img * (1 - face[..., None]) + skin_img * face[..., None]

    lm = _landmarks(ident, pose)
    es = ident["eye_size"] * w
    for eye in lm[:2]:
        cv2.ellipse(img, _pt(eye), (int(es * 1.6), max(int(es * 0.8), 1)), roll, 0, 360, (240, 240, 235), -1, cv2.LINE_AA)
        cv2.circle(img, _pt(eye), max(int(es * 0.75), 1), ident["iris"].tolist(), -1, cv2.LINE_AA)
        cv2.circle(img, _pt(eye), max(int(es * 0.35), 1), (10, 10, 10), -1, cv2.LINE_AA)
        brow = eye + _rot(roll) @ np.array([0, -es * 1.9], np.float32)
        cv2.ellipse(img, _pt(brow), (int(es * 1.9), max(int(ident["brow"] * w), 1)), roll, 0, 360,
                    ident["hair"].tolist(), -1, cv2.LINE_AA)
    nose = lm[2]
    cv2.ellipse(img, _pt(nose), (max(int(0.1 * w), 1), max(int(0.06 * w), 1)), roll, 0, 360,
                (np.array(skin) * 0.7).tolist(), -1, cv2.LINE_AA)
    mouth_c = (lm[3] + lm[4]) / 2
    half = float(np.linalg.norm(lm[4] - lm[3]) / 2)
    cv2.ellipse(img, _pt(mouth_c), (max(int(half), 1), max(int(0.09 * w), 1)), roll, 0, 360,
                ident["lips"].tolist(), -1, cv2.LINE_AA)
    cv2.line(img, _pt(lm[3]), _pt(lm[4]), (60, 30, 30), max(1, int(0.02 * w)), cv2.LINE_AA)
    return lm


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def _rot(deg: float) -> np.ndarray:
    th = np.deg2rad(deg)
    return np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]], np.float32)


def render(ident: dict, pose: dict, background: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame: (float32 HxWx3 image in 0-255, landmarks (5, 2))."""
    img = background.copy()
    lm = _draw_face(img, ident, pose, rng)
    return img, lm


def blend_mask(kind: str, lm: np.ndarray, pose: dict, aspect: float, size: int, blur: float) -> np.ndarray:
    """Soft paste mask of the given shape around the inner face, as face-swap tools use."""
    m = np.zeros((size, size), np.float32)
    w = pose["w"]
    if kind == "hull":
        # Landmarks' hull enlarged outwards to cheeks and chin, like a 68-point face-swap mask.
        centre = lm.mean(axis=0)
        chin = centre + _rot(pose["roll"]) @ np.array([0, 0.95 * w * aspect * 0.6], np.float32)
        brow = centre + _rot(pose["roll"]) @ np.array([0, -0.55 * w * aspect], np.float32)
        pts = np.concatenate([lm, chin[None], brow[None]])
        pts = centre + (pts - centre) * 1.35
        cv2.fillConvexPoly(m, cv2.convexHull(pts.astype(np.int32)), 1.0, cv2.LINE_AA)
    elif kind == "ellipse":
        cv2.ellipse(m, _pt((pose["cx"], pose["cy"])), (int(w * 0.8), int(w * aspect * 0.8)), pose["roll"],
                    0, 360, 1.0, -1, cv2.LINE_AA)
    elif kind == "rect":
        box = _to_px(pose, np.array([[-0.75, -0.55], [0.75, -0.55], [0.75, 0.75], [-0.75, 0.75]], np.float32),
                     aspect)
        cv2.fillConvexPoly(m, box.astype(np.int32), 1.0, cv2.LINE_AA)
    else:
        raise ValueError(f"unknown mask kind {kind!r}; valid: hull, ellipse, rect")
    sigma = max(blur * 2 * w, 0.5)
    return cv2.GaussianBlur(m, (0, 0), sigma)


def _swap(target: np.ndarray, target_lm: np.ndarray, source: np.ndarray, source_lm: np.ndarray, pose: dict,
          aspect: float, dom: Domain, rng: np.random.Generator) -> np.ndarray:
    """Paste the source face onto the target, the way a face-swap pipeline does."""
    size = target.shape[0]
    # 1. Align source on target landmarks (a similarity transform: resampling artefacts #1).
    mat, _ = cv2.estimateAffinePartial2D(source_lm, target_lm)
    if mat is None:
        mat = np.eye(2, 3, dtype=np.float32)
    aligned = cv2.warpAffine(source, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # 2. Generator resolution: the face is produced smaller and upsampled, losing the skin texture.
    if dom.resample < 1.0:
        small = max(4, int(round(size * dom.resample)))
        aligned = cv2.resize(cv2.resize(aligned, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                             interpolation=cv2.INTER_LINEAR)
    if dom.checker:
        # Transposed-convolution up-sampling leaves a period-2 grid pattern in generated faces.
        yy, xx = np.mgrid[0:size, 0:size]
        aligned = aligned + dom.checker * (((xx // 1 + yy // 1) % 2) * 2.0 - 1.0)[..., None].astype(np.float32)
    if dom.sharpen:
        aligned = aligned + dom.sharpen * (aligned - cv2.GaussianBlur(aligned, (0, 0), max(0.8, size / 80)))
    # 3. Colour transfer to the target (as swap tools do), imperfect: a residual colour mismatch remains.
    m = blend_mask(dom.mask, target_lm, pose, aspect, size, dom.seam_blur)[..., None]
    weight = m / max(float(m.sum()), 1e-6)
    aligned = aligned + ((target - aligned) * weight).sum(axis=(0, 1))
    aligned = aligned + rng.uniform(-dom.colour_shift, dom.colour_shift, 3).astype(np.float32)
    # 4. Soft paste through a face-shaped mask: the blending seam.
    return aligned * m + target * (1 - m)


def _soften(img: np.ndarray, sigma64: float, size: int) -> np.ndarray:
    """Optical blur of a whole frame; sigma given at 64 px and scaled with the image."""
    return cv2.GaussianBlur(img, (0, 0), sigma64 * size / 64) if sigma64 > 0 else img


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    u8 = np.clip(img, 0, 255).astype(np.uint8)
    if quality >= 100:
        return u8
    return jpeg_roundtrip(u8, quality, rgb=False)


def make_video(domain: Domain, fake: bool, size: int, frames: int, rng: np.random.Generator,
               source: np.random.Generator | None = None, masks: list[np.ndarray] | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One synthetic video: ``frames`` RGB uint8 crops and their landmarks.

    ``source`` (fakes only): the generator of the real video this fake is made from. The fake is then that
    real video, frame for frame (its person, pose, background, lighting, motion), with the face swapped, as
    face-swap datasets are made; ``rng`` draws only the swap (the other face, colour mismatch) and the camera
    noise. Without it a fake is drawn on a scene of its own.

    ``masks``: when given, each frame's blend mask (float32 size x size, 0-1) is appended to it: the mask the
    swap was pasted through for a fake, and for a real the one a swap of that frame would use (same shape at
    its own landmarks), so "where the forgery is" can be compared between the two (``dfd.models.explain``).
    """
    if fake and source is not None:
        _, background, scene = _scene(domain, size, frames, source)
        donor = _identity(rng) if domain.source == "swap" else None
        self_warp = (rng.uniform(-0.04, 0.04, 2) * size, rng.uniform(0.94, 1.06), rng.uniform(-4, 4))
        images, lms = [], []
        for p, img, lm, aspect in scene:
            if masks is not None:
                masks.append(blend_mask(domain.mask, lm, p, aspect, size, domain.seam_blur))
            img = _swap_frame(img, lm, p, aspect, donor, self_warp, domain, size, rng, background)
            img = img + rng.normal(0, 2.0, img.shape).astype(np.float32)
            images.append(_jpeg(img, domain.jpeg))
            lms.append(lm.astype(np.float32))
        return images, lms
    target = _identity(rng)
    donor = _identity(rng) if domain.source == "swap" else None
    pose = _pose(rng, size)
    background = _background(rng, size)
    self_warp = (rng.uniform(-0.04, 0.04, 2) * size, rng.uniform(0.94, 1.06), rng.uniform(-4, 4))
    images, lms = [], []
    for _ in range(frames):
        p = _jitter(pose, rng, size)
        img, lm = render(target, p, background, rng)
        img = _soften(img, domain.camera_blur, size)
        if masks is not None:
            masks.append(blend_mask(domain.mask, lm, p, target["aspect"], size, domain.seam_blur))
        if fake:
            img = _swap_frame(img, lm, p, target["aspect"], donor, self_warp, domain, size, rng, background)
        # Camera: mild sensor noise, then JPEG for reals and fakes alike.
        img = img + rng.normal(0, 2.0, img.shape).astype(np.float32)
        images.append(_jpeg(img, domain.jpeg))
        lms.append(lm.astype(np.float32))
    return images, lms


def _scene(domain: Domain, size: int, frames: int, rng: np.random.Generator
           ) -> tuple[dict, np.ndarray, list[tuple]]:
    """A real video's frames before the camera noise, replaying exactly the draws :func:`make_video` makes for
    it: (person, background, [(pose, image, landmarks, face aspect)])."""
    target = _identity(rng)
    if domain.source == "swap":
        _identity(rng)  # a real video draws (and ignores) a donor face too
    pose = _pose(rng, size)
    background = _background(rng, size)
    rng.uniform(-0.04, 0.04, 2), rng.uniform(0.94, 1.06), rng.uniform(-4, 4)  # the unused self-warp draws
    out = []
    for _ in range(frames):
        p = _jitter(pose, rng, size)
        img, lm = render(target, p, background, rng)
        out.append((p, _soften(img, domain.camera_blur, size), lm, target["aspect"]))
        rng.normal(0, 2.0, img.shape)  # its camera noise: drawn, so the next frame's draws match
    return target, background, out


def _swap_frame(img: np.ndarray, lm: np.ndarray, p: dict, aspect: float, donor: dict | None, self_warp: tuple,
                dom: Domain, size: int, rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """Swap the face of one frame: a donor identity rendered in the same pose, or a warped copy of the face."""
    if donor is not None:
        src_img, src_lm = render(donor, dict(p, w=p["w"] * rng.uniform(0.95, 1.05)), background, rng)
        src_img = _soften(src_img, dom.camera_blur, size)
    else:
        # Same identity, warped: a reenactment-like fake of the target itself.
        (dx, dy), s, r = self_warp
        mat = cv2.getRotationMatrix2D((p["cx"], p["cy"]), r, s)
        mat[:, 2] += (dx, dy)
        src_img = cv2.warpAffine(img, mat, (size, size), borderMode=cv2.BORDER_REFLECT)
        src_lm = lm @ mat[:, :2].T + mat[:, 2]
    return _swap(img, lm, src_img.astype(np.float32), src_lm.astype(np.float32), p, aspect, dom, rng)


# --------------------------------------------------------------------------------------------- source
