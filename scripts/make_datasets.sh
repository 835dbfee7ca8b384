#!/usr/bin/env bash
# Rebuild the training and validation sets of the campaign (training/configs/ict_prior.toml) under a folder
# (default /work/datasets), from ../shared/data. Resumable: existing samples and stored landmarks are kept.
# ~40 min on 2 idle cores (renders ≈ 40 paired samples/s (2 idle cores, session 6), MediaPipe landmarks ≈ 100 images/s).
#   bash scripts/make_datasets.sh [OUT] [all|campaign]
# `campaign`: only the sets the campaign's runs train and validate on since c13 (v6, v7, v8, the normal-only set, the
# real frames, the four validation sets): ~30 min on 2 idle cores (session 32), what a machine that lost
# /work/datasets needs first (session 21).
set -euo pipefail
OUT="${1:-/work/datasets}"
SETS="${2:-all}"
[[ $SETS == all || $SETS == campaign ]] || { echo "make_datasets.sh: SETS must be 'all' or 'campaign', got '$SETS'" >&2; exit 2; }
SHARED="${FACENORMALS_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}/data"
render() { facenormals data render --no-contact-sheet "$@"; }
# v3–v5 were rendered before session 8, when the engine dressed 15 % of the ICT faces in the James scan's texture by
# default; `--james` reproduces them as they are. Campaign runs from c8 on leave those faces out
# (`[data] exclude = { albedo = ["james-transfer"] }`): James is the real-scan validation set. New sets omit --james.
jt=(--james "$SHARED/james")

# training
if [[ $SETS == all ]]; then
render --source ict --count 10000 --out "$OUT/ict_paired_v3" --seed 21 "${jt[@]}"                    # new identities, v2 shading
render --source ict --count 2000 --out "$OUT/ict_profile_v3" --seed 31 --yaw-deg 45 90 "${jt[@]}"    # profiles, |yaw| 45–90°
fi
render --source ict --count 500 --out "$OUT/ict_normal_only" --seed 2 --kind normal-only
facenormals data photos --in "$SHARED/photos" "$SHARED/video" --out "$OUT/photos_image_only" --every 4 --no-contact-sheet
if [[ $SETS == all ]]; then
# v4 (issue 14, campaign config ict_prior_c4.toml): broader identities (per-face scale 1–1.6 under a skin-fold bound),
# smooth shape outside ICT's span (≤ 2 mm), 30 % of the faces at |yaw| 40–90° (27 % beyond ±45°); all video frames
render --source ict --count 10000 --out "$OUT/ict_paired_v4" --seed 41 "${jt[@]}" --yaw-deg 40 90 --profile-fraction 0.3 \
    --identity-scale 1.0 1.6 --detail-mm 2
fi
facenormals data photos --in "$SHARED/photos" "$SHARED/video" --out "$OUT/photos_image_only_v2" --every 1 --no-contact-sheet
if [[ $SETS == all ]]; then
# v5 (session 7, campaign config ict_prior_c6.toml): as v4 with off-span shape up to 5 mm (the renderer's bound)
render --source ict --count 10000 --out "$OUT/ict_paired_v5" --seed 51 --yaw-deg 40 90 --profile-fraction 0.3 \
    --identity-scale 1.0 1.6 --detail-mm 5 "${jt[@]}"
fi
# v6 (session 8, campaign config ict_prior_c8.toml): as v5, and no face wears the James texture
render --source ict --count 10000 --out "$OUT/ict_paired_v6" --seed 61 --yaw-deg 40 90 --profile-fraction 0.3 \
    --identity-scale 1.0 1.6 --detail-mm 5
# v7 (session 18, campaign config ict_prior_c13.toml): as v6, with fine skin relief (RMS tilt up to 6°)
render --source ict --count 8000 --out "$OUT/ict_paired_v7" --seed 71 --yaw-deg 40 90 --profile-fraction 0.3 \
    --identity-scale 1.0 1.6 --detail-mm 5 --relief-deg 6
# v8 (session 24, campaign config ict_prior_c32.toml): as v7, 60 % of the faces in real skin from the shared photos
# and videos (a bank of photo textures on ICT's topology; the James scan is not a source)
[[ -f "$OUT/photo_textures.npz" ]] || facenormals data textures --in "$SHARED/photos" "$SHARED/video" --out "$OUT/photo_textures.npz"
render --source ict --count 8000 --out "$OUT/ict_paired_v8" --seed 81 --yaw-deg 40 90 --profile-fraction 0.3 \
    --identity-scale 1.0 1.6 --detail-mm 5 --relief-deg 6 --photo-textures "$OUT/photo_textures.npz" --p-photo 0.6
# v9 (session 34, campaign config ict_prior_c53.toml): as v8 (6 000 faces), half of them near-neutral (their random
# mix of expressions scaled by U(0, 0.3)), as most real photos are
render --source ict --count 6000 --out "$OUT/ict_paired_v9" --seed 91 --yaw-deg 40 90 --profile-fraction 0.3 \
    --identity-scale 1.0 1.6 --detail-mm 5 --relief-deg 6 --photo-textures "$OUT/photo_textures.npz" --p-photo 0.6 \
    --mild-expressions 0.5
# validation (held out: other seeds; the James scan is the real-scan set: nothing of it enters training from c8 on)
render --source ict --count 200 --out "$OUT/val_ict_v2" --seed 1000 --hard-fraction 0.3
render --source "$SHARED/james" --count 60 --out "$OUT/val_james" --seed 1001
render --source ict --count 200 --out "$OUT/val_profile" --seed 2000 --yaw-deg 50 90
render --source ict --count 200 --out "$OUT/val_ict_v5" --seed 5000 --hard-fraction 0.3 --identity-scale 1.0 1.6 \
    --detail-mm 5                                                  # held-out ICT faces with off-span shape (session 7)
# real skin (session 34): ICT faces in the James scan's transferred texture (a skin no training set has since c8) and
# in the photo-texture bank (the skins of v8, on held-out faces); every other draw as val_ict_v2's recipe
render --source ict --count 200 --out "$OUT/val_ict_jskin" --seed 8001 --hard-fraction 0.3 "${jt[@]}" --p-transfer 1.0
render --source ict --count 200 --out "$OUT/val_ict_pskin" --seed 8000 --hard-fraction 0.3 \
    --photo-textures "$OUT/photo_textures.npz" --p-photo 1.0
# near-neutral faces (session 34): val_ict_v2's recipe, every face's expression mix scaled by U(0, 0.3)
render --source ict --count 200 --out "$OUT/val_ict_mild" --seed 9000 --hard-fraction 0.3 --mild-expressions 1.0
# MediaPipe's landmarks for every image (the loader draws each model's coarse face from them)
sets=("$OUT/photos_image_only" "$OUT/photos_image_only_v2" "$OUT/ict_paired_v6" "$OUT/ict_paired_v7" "$OUT/ict_paired_v8" \
    "$OUT/ict_paired_v9" "$OUT/val_ict_v2" "$OUT/val_james" "$OUT/val_profile" "$OUT/val_ict_v5" "$OUT/val_ict_jskin" "$OUT/val_ict_pskin" "$OUT/val_ict_mild")
if [[ $SETS == all ]]; then sets+=("$OUT/ict_paired_v3" "$OUT/ict_profile_v3" "$OUT/ict_paired_v4" "$OUT/ict_paired_v5"); fi
facenormals data prior --in "${sets[@]}"
