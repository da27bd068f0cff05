"""Shared UI helpers: the sidebar (model + video pickers) and cached wrappers around ``core``.

Pages stay thin: widgets → one cached ``core`` call → figures. Models are cached with
``st.cache_resource``; videos and results with ``st.cache_data`` keyed by content hashes and
parameters (never by the model object, which is passed with a leading underscore).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from core.classifier import VideoClassifier
from core.data import CLASSES
from core.errors import CoreError
from core.models import DEFAULT_MODEL, ModelSpec, available_models
from core.video import to_float

UPLOAD_MODEL = "Upload TorchScript…"
VIDEO_KINDS = ("Synthetic clip", "Bundled real clip", "Upload a video")
BUNDLED = {"Big Buck Bunny (CC-BY 3.0, Blender Foundation)": "bigbuckbunny_320x180.mp4"}


@dataclass
class Selection:
    """The current model and video, shared by every page through ``st.session_state``.

    ``model`` is a frozen :class:`core.classifier.VideoClassifier` (shared by every session: each
    use forks its own counters)."""

    model: VideoClassifier | None
    spec: ModelSpec | None
    model_key: str
    frames: torch.Tensor | None  # (T, 3, H, W): uint8 for decoded files (4× smaller), float for synthetic
    video_key: str
    video_label: str
    info: dict
    true_label: int | None
    error: str | None = None

    @property
    def n_frames(self) -> int:
        return 0 if self.frames is None else int(self.frames.shape[0])

    def clip(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Frames ``start … stop-1`` as float ``(n, 3, H, W)`` in [0, 1] (only those are converted)."""
        return to_float(self.frames[start:stop])

    def pick(self, indices: list[int]) -> torch.Tensor:
        """The frames at ``indices`` as float ``(n, 3, H, W)`` in [0, 1]."""
        return to_float(self.frames[indices])

    @property
    def video(self) -> torch.Tensor | None:
        """The whole clip as float — for short clips; pages use :meth:`clip`/:meth:`pick` on uploads."""
        return None if self.frames is None else to_float(self.frames)


@st.cache_resource(show_spinner="Loading model…")
def load_shipped_model(name: str) -> tuple[VideoClassifier, object]:
    from core.models import load_classifier

    clf = load_classifier(name)
    return clf, clf.spec


@st.cache_resource(show_spinner="Loading TorchScript model…")
def load_user_model(model_bytes: bytes, spec_text: str) -> tuple[VideoClassifier, object]:
    from core.models import load_torchscript, parse_spec

    spec = parse_spec(spec_text, "uploaded")
    model, spec = load_torchscript(model_bytes, spec)
    return VideoClassifier(model, spec), spec


@st.cache_data(show_spinner="Generating clip…", max_entries=64)
def synthetic_clip(label: int, seed: int, frames: int, size: int) -> np.ndarray:
    from core.data import make_clip

    return make_clip(label, seed, frames, size).video.numpy()


@st.cache_data(show_spinner=False, max_entries=64)
def synthetic_truth(label: int, seed: int, frames: int, size: int) -> np.ndarray:
    """Exact ground-truth flow (T-1, 2, H, W) of a synthetic clip."""
    from core.data import make_clip

    return make_clip(label, seed, frames, size).flow.numpy()


@st.cache_data(show_spinner="Computing optical flow…", max_entries=64)
def cached_flow(video_key: str, method: str, window: tuple[int, int], max_side: int,
                _video: np.ndarray) -> tuple[np.ndarray, float]:
    """Flow of the frames ``window[0] … window[1]-1`` (``_video`` holds exactly those; downscaled to
    ``max_side``) and seconds/pair."""
    import time

    from core.flow import compute_flow
    from core.video import limit_size

    v = limit_size(torch.from_numpy(_video), max_side)
    t0 = time.perf_counter()
    f = compute_flow(v, method).cpu().numpy()
    return f, (time.perf_counter() - t0) / max(1, f.shape[0])


@st.cache_resource
def clip_store():
    """Decoded clips shared by this server's sessions, bounded in bytes ($VRD_CLIP_CACHE_MB)."""
    from core.cache import BytesLRU

    return BytesLRU()


def uploaded_clip(data: bytes, name: str, digest: str | None = None) -> tuple[torch.Tensor, dict]:
    """Decoded uint8 frames ``(T, 3, H, W)`` and info of a video file, cached by content hash
    (``digest`` when the caller already has it: hashing a large upload on every rerun is not free)."""
    import io

    from core.video import decode_video

    def decode():
        buf = io.BytesIO(data)
        buf.name = name
        with st.spinner(f"Reading {name}…"):
            frames, info = decode_video(buf)
        return frames, info.to_dict()

    return clip_store().get_or_compute(f"{digest or _hash(data)}:{name}", decode)


@st.cache_data(show_spinner=False, max_entries=64)
def mp4_bytes(video_key: str, _video: torch.Tensor, fps: float = 8.0, scale: int = 4) -> bytes:
    """H.264 of a clip (uint8 or float frames), converted to float in chunks of 64 frames."""
    from core.video import encode_mp4

    return encode_mp4(_video, fps, scale)


@st.cache_data(show_spinner="Classifying…", max_entries=256)
def cached_predict(model_key: str, video_key: str, _model, _spec, _video: torch.Tensor) -> dict:
    """Prediction record plus the calibrated out-of-distribution report (``record['ood']``)."""
    from core.inference import predict
    from core.ood import ood_report

    record = predict(_model, _spec, _video)
    record["ood"] = ood_report(record["logits"], ood_calibration(model_key, _model))
    return record


@st.cache_resource(show_spinner="Calibrating the out-of-distribution score on the test split…")
def ood_calibration(model_key: str, _model) -> dict | None:
    from core.ood import calibration

    return calibration(_model)


def _hash(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def _leave_legacy_multipage_mode() -> None:
    """A fresh server opened directly on a page URL (e.g. ``/msr``) runs Streamlit's legacy
    ``pages/``-directory mode: the page file alone, with every file of ``pages/`` listed as a page,
    and it stays in that mode until ``app.py`` runs. Switch it off and rerun through ``app.py``'s
    ``st.navigation`` (same URL, so the same page)."""
    from streamlit.runtime.pages_manager import PagesManager

    # Once per session: AppTest re-arms the flag before every run, and a rerun there would
    # swallow the widget events of that run.
    if PagesManager.uses_pages_directory and not st.session_state.get("_left_legacy_mode"):
        st.session_state["_left_legacy_mode"] = True
        PagesManager.uses_pages_directory = False
        st.rerun()


def keep(*keys: str, valid: dict[str, Callable[[object], bool]] | None = None) -> None:
    """Make a page's settings survive page changes.

    Streamlit drops a widget's value as soon as a run does not draw the widget (any other page),
    so returning to a page would reset it. Call this at the top of a page, before its widgets:
    it copies the current values of the named setting widgets (a key ending in ``*`` is a prefix)
    into a per-session store and puts back those Streamlit dropped. ``valid`` may reject a stored
    value that no longer fits (e.g. a frame index beyond a shorter clip); it is then forgotten.
    Only setting widgets belong here — buttons, uploads and charts cannot be set this way.
    """
    ss = st.session_state
    store: dict = ss.setdefault("_kept_settings", {})
    valid = valid or {}

    def named(k: str) -> bool:
        return any(k == p or (p.endswith("*") and k.startswith(p[:-1])) for p in keys)

    for k in list(ss.keys()):
        if isinstance(k, str) and named(k):
            store[k] = ss[k]
    for k, v in list(store.items()):
        if not named(k) or k in ss:
            continue
        check = valid.get(k)
        if check is not None and not check(v):
            del store[k]
            continue
        ss[k] = v


def run_job(store: str, key: str, job: Callable[[Callable[[float, str], None]], dict], limit: int = 8) -> None:
    """Run one dataset-scale job with a progress bar that ends with it; keep its result under ``key``
    in the session's ``store`` (the ``limit`` newest results). ``job(progress)`` gets the bar's
    callback; a :class:`CoreError` becomes one clear message. Any click while it runs stops it (a
    Streamlit rerun); the tasks that finished stay in the disk cache."""
    results = st.session_state.setdefault(store, {})
    bar = st.progress(0.0, text="starting…")
    try:
        results[key] = job(lambda f, m: bar.progress(min(max(f, 0.0), 1.0), text=m))
    except CoreError as e:
        st.error(str(e))
    bar.empty()  # the progress bar ends with the job
    while len(results) > limit:
        results.pop(next(iter(results)))


def forget(*keys: str) -> None:
    """Drop settings (widget value and kept copy) so their widgets start from their defaults."""
    store = st.session_state.get("_kept_settings", {})
    for k in keys:
        st.session_state.pop(k, None)
        store.pop(k, None)


def sidebar() -> Selection:
    """Render the shared sidebar (``app.py`` does, once per run, before the page) and store the
    selection in ``st.session_state['selection']``."""
    sb = st.sidebar
    sb.header("Model")
    names = [c["name"] for c in available_models()]
    options = names + [UPLOAD_MODEL]
    pref = st.session_state.get("pref_model", DEFAULT_MODEL)
    default = options.index(pref) if pref in options else (names.index(DEFAULT_MODEL) if DEFAULT_MODEL in names else 0)
    choice = sb.selectbox("Classifier", options, index=default, key="model_choice",
                          help="Shipped models were trained on the synthetic motion-action dataset; "
                               "see their model cards on the Home page.")
    st.session_state["pref_model"] = choice  # plain keys survive page switches
    model = spec = None
    model_key = choice
    error = None
    if choice == UPLOAD_MODEL:
        mf = sb.file_uploader("TorchScript model (.pt)", type=["pt", "pth", "ts"], key="model_file")
        sf = sb.file_uploader("Spec (JSON/YAML: frames, size, classes)", type=["json", "yaml", "yml"],
                              key="model_spec")
        if mf is not None and sf is not None:
            mb = mf.getvalue()
            try:
                model, spec = load_user_model(mb, sf.getvalue().decode("utf-8", "replace"))
                model_key = f"user:{_hash(mb)}"
            except CoreError as e:
                error = f"Model not loaded: {e}"
        else:
            sb.info("Upload a TorchScript model and its spec.")
    else:
        try:
            model, spec = load_shipped_model(choice)
            model_key = f"{choice}:{spec.card['sha256'][:16]}"
        except CoreError as e:
            error = f"Model not loaded: {e}"

    sb.header("Video")
    pk = st.session_state.get("pref_kind", VIDEO_KINDS[0])
    kind = sb.radio("Source", VIDEO_KINDS, index=VIDEO_KINDS.index(pk) if pk in VIDEO_KINDS else 0,
                    key="video_kind", horizontal=True)
    st.session_state["pref_kind"] = kind
    video = None
    info: dict = {}
    true_label = None
    video_key = ""
    video_label = ""
    if kind == VIDEO_KINDS[0]:
        pc = st.session_state.get("pref_class", CLASSES[0])
        cls = sb.selectbox("Motion class", CLASSES, index=CLASSES.index(pc) if pc in CLASSES else 0, key="syn_class")
        seed = int(sb.number_input("Seed", 0, 10_000_000, int(st.session_state.get("pref_seed", 0)), 1, key="syn_seed"))
        st.session_state["pref_class"], st.session_state["pref_seed"] = cls, seed
        frames = spec.frames if spec else 16
        size = spec.size if spec else 64
        label = CLASSES.index(cls)
        video = torch.from_numpy(synthetic_clip(label, seed, frames, size))
        true_label = label
        video_key = f"synthetic:{cls}:{seed}:{frames}x{size}"
        video_label = f"synthetic:{cls}:{seed}"
        info = {"source": video_label, "fps": 8.0, "width": size, "height": size, "frames": frames,
                "synthetic": {"label": label, "seed": seed, "frames": frames, "size": size}}
    elif kind == VIDEO_KINDS[1]:
        from core.models.registry import ASSETS

        name = sb.selectbox("Clip", list(BUNDLED), key="bundled_clip")
        path = ASSETS.parent / "samples" / BUNDLED[name]
        try:
            video, info = uploaded_clip(path.read_bytes(), path.name, f"bundled:{BUNDLED[name]}")
            video_key = f"bundled:{BUNDLED[name]}"
            video_label = BUNDLED[name]
            sb.caption("© 2008 Blender Foundation, www.bigbuckbunny.org, CC-BY 3.0 (assets/samples/LICENSE.md)")
        except (CoreError, OSError) as e:
            error = (error + "\n\n" if error else "") + f"Bundled clip not loaded: {e}"
    else:
        up = sb.file_uploader("Video (mp4, avi, mov, webm, gif)", key="video_file",
                              type=["mp4", "avi", "mov", "webm", "gif", "mkv", "m4v"])
        store = st.session_state.setdefault("_uploads", {})  # content hash -> (name, bytes), this session
        if up is not None:
            data = up.getvalue()
            h = _hash(data)
            if h not in store:
                store.clear()  # one upload kept per session (bounded memory)
                store[h] = (up.name, data)
            st.session_state["_upload_current"] = h
        h = st.session_state.get("_upload_current")
        if up is None and h in store:
            sb.caption(f"Using the uploaded **{store[h][0]}** (kept for this session).")
        if h in store:
            name, data = store[h]
            try:
                video, info = uploaded_clip(data, name, h)
                video_key = f"upload:{h}"
                video_label = name
            except CoreError as e:
                error = (error + "\n\n" if error else "") + f"Video not loaded: {e}"
                store.pop(h, None)
    if error:
        sb.error(error)  # visible on every page
    sel = Selection(model, spec, model_key, video, video_key, video_label, info, true_label, error)
    st.session_state["selection"] = sel
    return sel


def current() -> Selection:
    """The selection made in the shared sidebar, which ``app.py`` renders once per run before the
    page (``app.py`` marks the run; the page consumes the mark). A page run on its own renders the
    sidebar itself."""
    if st.session_state.pop("_sidebar_drawn", False):
        return st.session_state["selection"]
    # The page runs alone: Streamlit's legacy pages/ mode (a fresh server opened on a page URL, and
    # every AppTest run after the first). Leave it (one rerun through app.py) and draw the sidebar here.
    _leave_legacy_multipage_mode()
    return sidebar()


def require_model_and_clip(sel: Selection) -> torch.Tensor:
    """Stop the page with a clear message unless a model and a clip are loaded; return the clip
    fitted to the model's input (frames, square size)."""
    from core.inference import prepare

    if sel.error:
        st.error(sel.error)
    if sel.frames is None or sel.model is None:
        st.info("Choose a clip and a model in the sidebar.")
        st.stop()
    from core.video import sample_indices

    return prepare(sel.pick(sample_indices(sel.n_frames, sel.spec.frames)), sel.spec)  # converts 16 frames only

