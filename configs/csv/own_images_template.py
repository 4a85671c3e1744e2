# Your own multi-label images: a template with every key, each commented. Copy it, fill in the
# paths and classes, and start with the two stages:
#
#     mlkd-cache teacher-train -c my_images.py --data-root /data/my_images -o runs/mine/teacher
#     mlkd-cache dump-targets -c my_images.py --data-root /data/my_images -t runs/mine/teacher/teacher.pt -o runs/mine/cache
#
# The layout it expects (docs/datasets.md#your-label-files-as-they-are): a folder of images and a label
# file per split, here
#
#     data_root/
#       images/cat_001.jpg ...
#       train.csv          image,labels          one row per image; labels separated by ';' or spaces
#       test.csv           images/cat_001.jpg,cat;sofa
#
# A key left out takes its default (docs/configs.md lists them all); the values below are the
# defaults unless a comment says otherwise.

# ---- data ------------------------------------------------------------------------------------
dataset = "csv"
data_root = None  # your folder ("/data/my_images"), or --data-root; label files and image_dir are relative to it
dataset_para = dict(
    train_file="train.csv",  # .csv/.txt (comma), .tsv (tab) or .json list of {"image": ..., "labels": [...]}
    test_file="test.csv",
    val_file=None,  # a val file of your own; None here: val_split below carves one out of train
    train_size=None,  # None: every training image; N: the first N (students on part of the teacher's data)
    image_dir=None,  # folder the image column is relative to (None: data_root)
    # The class order: index c of every logit and threshold is classes[c]. None: the class columns
    # of a one-hot train file, else the sorted union of the labels in it. Give the list to fix the
    # order (and to refuse a label that is not in it).
    classes=None,
    image_column="image",  # the column naming the image
    image_pattern=None,  # e.g. "Images/{}.jpg" when the column holds bare ids
    labels_column="labels",  # the column of label names
    label_sep=None,  # None: ';' or whitespace
    label_columns=None,  # "one-hot" (every column but the image's), or a list of 0/1 columns
    negative_label=None,  # a label meaning "no class", e.g. "none"
)
dataset_para_t = dict()  # the teacher's dataset arguments over dataset_para (e.g. train_size=None)
val_split = dict(fraction=0.1, seed=0)  # val held out of train, stratified per class (default: off)
bad_images = "error"  # an undecodable image: "error" stops naming it; "skip" leaves it out at start-up
workers = 2  # DataLoader worker processes per process

# ---- models ----------------------------------------------------------------------------------
img_size = 224  # input side in pixels (images resized to img_size x img_size)
batch_size = 64  # per process; under torchrun the global batch is this times the processes
model_t = "resnet101"  # teacher: a seed name or any timm model name
model_s = "resnet34"  # student
pretrained_t = None  # a local weights file for the teacher's backbone (nothing is downloaded)
pretrained_s = None  # the same for the student
teacher_pretrained = False  # True: teacher-train only checks OUT/teacher.pt (a teacher you trained elsewhere)
embed_dim = 768  # ML-Decoder's label-wise embedding size E

# ---- training --------------------------------------------------------------------------------
lr_t = 1e-4  # teacher peak learning rate (one-cycle)
max_epoch_t = 80  # teacher epochs the schedule is planned for
stop_epoch_t = None  # stop earlier than planned (None: max_epoch_t)
lr_s = 1e-4  # student peak learning rate
max_epoch_s = 80
stop_epoch_s = None
loss_t = "bce"  # hard-label loss: "bce" (sum-reduced, as L2D) or "asl"
loss_s = "bce"
asl_para = dict(gamma_neg=4.0, gamma_pos=0.0, clip=0.05)  # used where a loss is "asl"
optimizer = "adam"  # "adam" or "adamw"
weight_decay = 1e-4  # on weights, not on biases and norms
pct_start = 0.2  # one-cycle warm-up share
amp = True  # mixed precision on CUDA (ignored on CPU)
seed = 0  # initialisation, data order and every augmented view

# ---- distillation: L2D's MLD + LED (docs/losses.md; tune the weights with mlkd-cache sweep) ---------
criterion_t2s_para = dict(
    name="L2D",
    para=dict(
        lambda_ft=0.0,
        ft_dis=None,
        lambda_le=1.0,
        le_dis=dict(name="LED", para=dict(lambda_cd=100.0, lambda_id=1000.0)),
        lambda_logits=10.0,
        logits_dis=dict(name="MLD", para=dict()),
    ),
)
search_space = {}  # what sweep tunes ({}: lr_s and each active loss weight; docs/sweep.md)

# ---- augmentation (part of the cache: a cache serves the transform it was dumped with) ----------
transform = dict(
    cutout=0.5,  # Cutout box side as a share of the image side (0: off)
    randaugment="rand-m9-n2-mstd0.5",  # timm RandAugment string (None: off)
    hflip=0.0,  # horizontal flip probability
    mean=(0.0, 0.0, 0.0),  # per-channel mean subtracted after ToTensor (L2D: none)
    std=(1.0, 1.0, 1.0),
    interpolation="bilinear",
    decode="full",  # "reduced": JPEGs over twice img_size decoded at 1/2-1/8 scale (faster)
)

# ---- the cache (docs/cache.md) ---------------------------------------------------------------------
cache = dict(
    views=16,  # augmented views per image: 16, never fewer than 8 on photographs
    dtype="float16",  # float16, float32, bfloat16 or int8
    fields="auto",  # the teacher outputs stored: "auto" (what the distiller reads) or a list
    embedding="positive",  # label-wise embeddings of the positives only, or "dense"
    shard_size=4096,  # images per HDF5 shard
    images="none",  # also store the images ("raw" or "jpeg"): a student then needs only the cache
    jpeg_quality=90,
)

# ---- scoring and logs ------------------------------------------------------------------------------
eval_split = "val"  # scored during training; choose epochs and weights on val, report test once
eval_every = 1  # score every N epochs (and after the last)
log_every = 10  # loss terms of every N-th step to OUT/steps.jsonl (0: off)
tensorboard = False  # also TensorBoard event files (the tensorboard extra)
replay_check = 0.05  # share of a student's inputs checked against the cache's fingerprints
