"""Mean per-pixel angular error maps of checkpoints on a validation set (the trainer's crops: stored prior, no
mirror), where the last is worse than the first, and the mean signed error of the normals' y (up) component.

    python error_maps.py val_james facenormals/weights/fast-prior.safetensors /work/runs/gpu1/mean.fp16.safetensors
"""
import sys, numpy as np, torch
from facenormals.checkpoint import load_network
from facenormals.training.loaders import load_item, fixed_samples
from facenormals.training.trainer import VAL_SIZE, image_input
torch.set_num_threads(1)
name, ckpts = sys.argv[1], sys.argv[2:]
samples = fixed_samples((f"/work/datasets/{name}",), "paired", 200)
maps, ybias = [], []
for ck in ckpts:
    m = load_network(ck).float().eval(); path = m.image_to_normal_path
    acc = np.zeros((256, 256)); cnt = np.zeros((256, 256)); per = []; ysum = np.zeros((256, 256))
    dy = []
    with torch.inference_mode():
        for f in samples:
            it = load_item(f, VAL_SIZE, None, None, m.cfg.input_prior)
            b = {k: torch.from_numpy(it[k][None]) for k in ("image", "prior") if k in it}
            p = path(image_input(b)).numpy()[0].transpose(1, 2, 0); g = it["normals"].transpose(1, 2, 0); mk = it["mask"][0] > .5
            e = np.degrees(np.arccos(np.clip((p * g).sum(-1), -1, 1)))
            acc[mk] += e[mk]; cnt[mk] += 1; per.append(e[mk].mean()); ysum[mk] += (p - g)[..., 1][mk]
            # signed bias of the predicted normal's components (pred − gt) averaged inside the mask
            dy.append((p - g)[mk].mean(0))
    maps.append(acc / np.maximum(cnt, 1)); ybias.append(ysum / np.maximum(cnt, 1))
    print(ck, f"mean {np.mean(per):.3f}", "mean(pred-gt) xyz", np.round(np.mean(dy, 0), 4))
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
fig, ax = plt.subplots(1, len(maps) + 3, figsize=(4 * (len(maps) + 3), 4))
for a, mp, ck in zip(ax, maps, ckpts):
    a.imshow(np.where(cnt > 20, mp, np.nan), vmin=0, vmax=25); a.set_title(ck.split("/")[-1][:28])
for a, yb, ck in zip(ax[len(maps):len(maps) + 2], (ybias[0], ybias[-1]), (ckpts[0], ckpts[-1])):
    im2 = a.imshow(np.where(cnt > 20, yb, np.nan), cmap="PuOr_r", vmin=-0.1, vmax=0.1)
    a.set_title("mean (pred − truth).y " + ck.split("/")[-1][:14])
plt.colorbar(im2, ax=ax[len(maps) + 1])
d = np.where(cnt > 20, maps[-1] - maps[0], np.nan); im = ax[-1].imshow(d, cmap="RdBu_r", vmin=-3, vmax=3)
ax[-1].set_title("error: last − first (°)")
plt.colorbar(im, ax=ax[-1]); plt.tight_layout(); plt.savefig(f"{name}_error_maps.png", dpi=60)
