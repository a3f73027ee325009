"""A mirror of how richzhang/PerceptualSimilarity's data loaders read a BAPPS subset.

Written from the loader's documented behaviour (data/image_folder.py, data/dataset/
twoafc_dataset.py, jnd_dataset.py), not copied: each folder is listed recursively,
filtered by extension, sorted by full path; example k takes the k-th file of every list;
images are opened with PIL, converted to RGB, resized so the shorter side is 64 (bilinear),
scaled to [-1, 1]; labels are np.load(path).reshape((1, 1, 1)).
"""
import os

import numpy as np
from PIL import Image

IMG_EXTENSIONS = [".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".ppm", ".PPM", ".bmp", ".BMP"]
NP_EXTENSIONS = [".npy"]


def make_dataset(folder, extensions):
    images = []
    for root, _, fnames in sorted(os.walk(folder)):
        for fname in fnames:
            if any(fname.endswith(ext) for ext in extensions):
                images.append(os.path.join(root, fname))
    return sorted(images)


def load_image(path, load_size=64):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    if min(w, h) != load_size:  # torchvision Resize(int): shorter side to load_size
        if w <= h:
            size = (load_size, int(load_size * h / w))
        else:
            size = (int(load_size * w / h), load_size)
        im = im.resize(size, Image.BILINEAR)
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return (arr - 0.5) / 0.5  # Normalize(mean=0.5, std=0.5)


class TwoAFCDataset:
    def __init__(self, root, load_size=64):
        self.load_size = load_size
        self.ref_paths = make_dataset(os.path.join(root, "ref"), IMG_EXTENSIONS)
        self.p0_paths = make_dataset(os.path.join(root, "p0"), IMG_EXTENSIONS)
        self.p1_paths = make_dataset(os.path.join(root, "p1"), IMG_EXTENSIONS)
        judge_dir = os.path.join(root, "judge")
        self.judge_paths = make_dataset(judge_dir, NP_EXTENSIONS) if os.path.isdir(judge_dir) else []

    def __len__(self):
        return len(self.p0_paths)

    def __getitem__(self, k):
        item = {"ref": load_image(self.ref_paths[k], self.load_size),
                "p0": load_image(self.p0_paths[k], self.load_size),
                "p1": load_image(self.p1_paths[k], self.load_size),
                "paths": (self.ref_paths[k], self.p0_paths[k], self.p1_paths[k])}
        if self.judge_paths:
            item["judge"] = np.load(self.judge_paths[k]).reshape((1, 1, 1))
        return item


class JNDDataset:
    def __init__(self, root, load_size=64):
        self.load_size = load_size
        self.p0_paths = make_dataset(os.path.join(root, "p0"), IMG_EXTENSIONS)
        self.p1_paths = make_dataset(os.path.join(root, "p1"), IMG_EXTENSIONS)
        same_dir = os.path.join(root, "same")
        self.same_paths = make_dataset(same_dir, NP_EXTENSIONS) if os.path.isdir(same_dir) else []

    def __len__(self):
        return len(self.p0_paths)

    def __getitem__(self, k):
        item = {"p0": load_image(self.p0_paths[k], self.load_size),
                "p1": load_image(self.p1_paths[k], self.load_size),
                "paths": (self.p0_paths[k], self.p1_paths[k])}
        if self.same_paths:
            item["same"] = np.load(self.same_paths[k]).reshape((1, 1, 1))
        return item
