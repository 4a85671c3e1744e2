# PASCAL VOC 2007, Swin-T teacher -> MobileNetV2 student, distiller MLD + MPSCD.
#
# Source: MPSCD's run command (github.com/AiXia520/MPSCD, README "Quick start")
#     python main.py --cfg_file ./configs/voc/swin_t_to_mobilenetv2_mpscd.py --data_root ./dataset/
# That config file is not published (the repository has no configs/ folder), so no value could be
# copied from it. MPSCD's main.py, learner.py and data/voc.py keep L2D's training recipe (Adam,
# weight decay 1e-4 on weights only, OneCycle with pct_start 0.2, sum-reduced BCE, Resize +
# Cutout 0.5 + RandAugment, no normalisation, ML-Decoder of width 768, seed 0: this tool's
# defaults), so the values below are those of L2D's released config (github.com/penghui-yang/L2D
# configs/coco/resnet101_to_resnet34_l2d.py: img_size 224, batch 64, lr 1e-4, 80 planned epochs,
# teacher stopped after 30). What differs, and why:
# - the distiller: MPSCD's loss code does not run as published and its weights sit in the missing
#   file, so this is L2D's MLD (weight 10, as L2D) plus this tool's MPSCD (docs/losses.md) with
#   its default weights and temperatures, the best point of the digits sweep recorded there;
# - MPSCD's main.py keeps the student of the best test-set mAP; this tool reports the last epoch;
# - val_split holds a tenth of the training images out for decision thresholds: the teacher and
#   students train on the other 90% (MPSCD trains on all; val_split = dict(fraction=0.0) does too);
# - backbones are timm's swin_tiny_patch4_window7_224 / mobilenetv2_100;
#   RandAugment is timm's (every view must be replayable from its seed).
dataset = "voc"

# teacher-train trains the teacher (MPSCD's main.py forces True: load one trained by an earlier run)
teacher_pretrained = False

img_size = 224
batch_size = 64

model_t = "swin_t"
lr_t = 1e-4
max_epoch_t = 80
stop_epoch_t = 30

model_s = "mobilenet_v2"
lr_s = 1e-4
max_epoch_s = 80
stop_epoch_s = 80

criterion_t2s_para = dict(
    name="MPSCD",
    para=dict(
        lambda_ft=0.0,
        ft_dis=None,
        lambda_le=1.0,
        le_dis=dict(
            name="MPSCD",
            para=dict(lambda_pcrd=1.0, lambda_pcsd=1.0, tau=0.1, tau_s=0.1, momentum=0.9),
        ),
        lambda_logits=10.0,
        logits_dis=dict(name="MLD", para=dict()),
    ),
)

# ---- this tool's keys ----
data_root = None  # pass --data-root: the folder with VOCtrainval2007/ and VOCtest2007/
# MPSCD (like L2D) starts both backbones from ImageNet weights, downloaded by its code; this tool
# never downloads: pass --pretrained PATH (a local timm/torchvision state dict) to teacher-train
# and to distill-student. None trains from scratch.
pretrained_t = None
pretrained_s = None
workers = 8  # MPSCD's (and L2D's) DataLoader num_workers

# A val split held out of the train split (docs/datasets.md#a-held-out-val-split): a tenth of the
# training images, stratified per class, in no train split (not the teacher's, the cache's or a
# student's). distill-student tunes each student's decision thresholds on it and stores them in
# student.pt; tune-thresholds reads it. The scores stay on the test split (eval_split = "test").
val_split = dict(fraction=0.1, seed=0)

# VOC is small (about 4,510 training images once val_split holds a tenth out), so 16 views cost
# little: about 0.28 GB in float16 with positive-label embeddings (the only ones MPSCD reads); an
# 80-epoch student sees each view 5 times.
cache = dict(views=16, dtype="float16", embedding="positive")
