# Digits pair: ResNet-10-T teacher (4.9 M backbone parameters) -> timm's tiny test_resnet student
# (0.37 M), L2D distiller (MLD + LED). Embedded data (scikit-learn's real 8x8 digit scans on
# 32x32 canvases), no data root, no download. The benchmark of docs/results.md.
#
# A distillation problem, not an under-training one: the teacher has seen 6x more images than
# its students (dataset_para_t: 6,000 canvases; the students' 1,000 are the first 1,000 of them),
# as a teacher pretrained on more data has. Without RandAugment the no-KD student converges in 40
# epochs (val mAP 93.17 at 40, 92.79 at 80), 5.7 below the teacher (98.82): docs/results.md. Teacher 6
# epochs and students 40 keep `make demo` under 15 minutes.
#
# Canvases are upscaled to 64 px: ImageNet-style backbones divide the input by 4 in their stem,
# and at 32 px the 12-px digits shrink to 3 px.
dataset = "digits"
dataset_para = dict(train_size=1000, val_size=1000, test_size=2000)  # the students' data (the cache covers it)
dataset_para_t = dict(train_size=6000)  # the teacher's

teacher_pretrained = False

img_size = 64
batch_size = 32

model_t = "resnet10t"
lr_t = 1e-3
max_epoch_t = 6

model_s = "test_resnet"
lr_s = 1e-3
max_epoch_s = 40

embed_dim = 128
workers = 0  # on 2 cores a loader process competes with the training threads: 2.7 s vs 3.3 s per student epoch
seed = 0
eval_every = 5  # the test split every 5 epochs and after the last (curves in the demo's plot)

# digits are not mirror-symmetric: no flips; a small Cutout so that no digit is erased whole; no
# RandAugment: with it the students were still gaining val mAP after 150 epochs (docs/results.md)
transform = dict(cutout=0.2, randaugment=None, hflip=0.0)

# L2D's distiller with LED at a tenth of L2D's COCO weights (lambda_cd 100, lambda_id 1000),
# chosen on the val split of the earlier digits benchmark (docs/losses.md); docs/results.md
# measures it on this one.
criterion_t2s_para = dict(
    name="L2D",
    para=dict(
        lambda_ft=0.0,
        ft_dis=None,
        lambda_le=1.0,
        le_dis=dict(name="LED", para=dict(lambda_cd=10.0, lambda_id=100.0)),
        lambda_logits=10.0,
        logits_dis=dict(name="MLD", para=dict()),
    ),
)

cache = dict(
    views=16
)  # chosen on the val split of docs/results.md: 16 views gave the best L2D val mAP (96.02; 8: 95.68, online fresh: 95.87)
