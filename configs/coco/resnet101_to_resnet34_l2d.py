# MS-COCO 2014, ResNet-101 teacher -> ResNet-34 student, L2D's distiller (MLD + LED).
#
# Source: L2D's released config (github.com/penghui-yang/L2D, commit e3c438ad,
# configs/coco/resnet101_to_resnet34_l2d.py). Every key that file sets has its value here except
# teacher_pretrained (below). The rest of L2D's recipe sits in its main.py and data/coco.py and
# equals this tool's defaults: Adam with weight decay 1e-4 on weights only, OneCycle (pct_start
# 0.2), sum-reduced BCE, Resize + Cutout 0.5 + RandAugment, no normalisation, ML-Decoder of width
# 768, seed 0.
# What differs, and why:
# - teacher_pretrained: L2D's file says True, which makes its main.py load a teacher trained by an
#   earlier run (the copy in its README says False); here teacher-train trains it. Set True only
#   when OUT/teacher.pt already holds the trained teacher.
# - val_split holds a tenth of the training images out for decision thresholds: the teacher and
#   students train on the other 90% (L2D trains on all; val_split = dict(fraction=0.0) does too);
# - RandAugment is timm's "rand-m9-n2-mstd0.5" (L2D: the `randaugment` package), because every view
#   must be replayable from its seed; the backbones are timm's resnet101 / resnet34.
#
# Run: mlkd-cache teacher-train -c coco/resnet101_to_resnet34_l2d.py --data-root /data/coco \
#          --pretrained weights/resnet101.pth -o runs/coco/teacher
#      then dump-targets and distill-student with the same -c and --data-root.
dataset = "coco"

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
# pass --data-root: the folder with train2014/, val2014/ and train_anno.json, val_anno.json
# (or annotations/instances_{train,val}2014.json)
data_root = None
# L2D starts both backbones from ImageNet weights (torchvision's, downloaded by its code); this tool
# never downloads: pass --pretrained PATH (a local timm/torchvision state dict) to teacher-train and
# to distill-student. None trains from scratch.
pretrained_t = None
pretrained_s = None
workers = 8  # L2D's DataLoader num_workers

# A val split held out of the train split (docs/datasets.md#a-held-out-val-split): a tenth of the
# training images, stratified per class, in no train split (not the teacher's, the cache's or a
# student's). distill-student tunes each student's decision thresholds on it and stores them in
# student.pt; tune-thresholds reads it. The scores stay on the test split (eval_split = "test").
val_split = dict(fraction=0.1, seed=0)

# 16 views (docs/results.md#how-many-views-to-store: with RandAugment, 16): an 80-epoch student
# sees each cached view 5 times; float16, positive-label embeddings: about 10.4 GB for the 73,873
# training images val_split leaves of 82,081 (`dump-targets --dry-run` prints the exact plan).
# views=8 halves it.
cache = dict(views=16, dtype="float16", embedding="positive")
