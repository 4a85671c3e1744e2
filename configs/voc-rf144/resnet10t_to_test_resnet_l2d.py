# VOC 2007 rf144 pair: ResNet-10-T teacher -> timm's tiny test_resnet student, L2D distiller
# (MLD + LED), both from scratch (no pretrained weights are available offline). Real photographs:
# the 4,961 VOC 2007 images of ../shared/data/voc2007-rf144 (short side 144 px; train 3,461,
# val 500, test 1,000; labels from a public export, not the official benchmark: its README).
#
#     mlkd-cache teacher-train -c voc-rf144/resnet10t_to_test_resnet_l2d.py \
#         --data-root ../shared/data/voc2007-rf144 -o runs/voc-rf144/teacher
#
# Choices are made on the val split (eval_split = "val") from the teacher and no-KD students only
# (docs/results.md records the search).
dataset = "csv"
dataset_para = dict(train_file="train.csv", val_file="val.csv", test_file="test.csv")

img_size = 64
batch_size = 32

model_t = "resnet10t"
lr_t = 1e-3
max_epoch_t = 40

model_s = "test_resnet"
lr_s = 1e-3
max_epoch_s = 40

embed_dim = 128
workers = 0  # on 2 cores a loader process competes with the training threads
seed = 0
eval_split = "val"
eval_every = 5

# VOC photographs are mirror-symmetric: flips; a moderate Cutout; no RandAugment (first search point)
transform = dict(cutout=0.25, randaugment=None, hflip=0.5)

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
