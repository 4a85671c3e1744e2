# NUS-WIDE (81 concepts), ResNet-101 teacher -> ResNet-34 student, L2D's distiller (MLD + LED).
#
# Source: L2D (github.com/penghui-yang/L2D) reports this pair on NUS-WIDE and reads NUS-WIDE with
# data/nus.py, but ships only its COCO config; the values below are those of that file
# (configs/coco/resnet101_to_resnet34_l2d.py, commit e3c438ad), which its main.py applies to
# every dataset unchanged: img_size 224, batch 64, lr 1e-4, 80 planned epochs, teacher stopped
# after 30, MLD weight 10, LED weights 100 / 1000. The rest of L2D's recipe (Adam with weight
# decay 1e-4 on weights only, OneCycle with pct_start 0.2, sum-reduced BCE, Resize + Cutout 0.5 +
# RandAugment, no normalisation, ML-Decoder of width 768, seed 0) is this tool's default.
# What differs, and why:
# - teacher_pretrained is False: teacher-train trains the teacher (L2D's COCO file says True, which
#   makes its main.py load a teacher trained by an earlier run);
# - val_split holds a tenth of the training images out for decision thresholds: the teacher and
#   students train on the other 90% (L2D trains on all; val_split = dict(fraction=0.0) does too);
# - RandAugment is timm's (every view must be replayable from its seed); backbones are timm's.
dataset = "nus"

teacher_pretrained = False

img_size = 224
batch_size = 64

model_t = "resnet101"
lr_t = 1e-4
max_epoch_t = 80
stop_epoch_t = 30

model_s = "resnet34"
lr_s = 1e-4
max_epoch_s = 80
stop_epoch_s = 80

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

# ---- this tool's keys ----
# pass --data-root: the folder with Flickr/, ImageList/, TrainTestLabels/ and Concepts81.txt
data_root = None
# L2D starts both backbones from ImageNet weights (torchvision's, downloaded by its code); this tool
# never downloads: pass --pretrained PATH (a local timm/torchvision state dict) to teacher-train
# and to distill-student. None trains from scratch.
pretrained_t = None
pretrained_s = None
workers = 8  # L2D's DataLoader num_workers

# A val split held out of the train split (docs/datasets.md#a-held-out-val-split): a tenth of the
# training images, stratified per class, in no train split (not the teacher's, the cache's or a
# student's). distill-student tunes each student's decision thresholds on it and stores them in
# student.pt; tune-thresholds reads it. The scores stay on the test split (eval_split = "test").
val_split = dict(fraction=0.1, seed=0)

# 16 views as for COCO (docs/results.md#how-many-views-to-store): about 18 GB in float16 with
# positive-label embeddings for the 145,610 images val_split leaves of the 161,789 of
# TrainImagelist.txt (about 2.4 positives each); views=8 halves it (`dump-targets --dry-run`
# prints the exact plan).
cache = dict(views=16, dtype="float16", embedding="positive")
