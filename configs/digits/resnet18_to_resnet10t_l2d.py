# Digits demo pair: ResNet-18 teacher -> ResNet-10-T student, L2D distiller (MLD + LED).
# Embedded data (scikit-learn's 8x8 handwritten digits on 32x32 canvases): no data root,
# no download. Sized so the teacher trains in a few minutes on 2 CPU cores.
dataset = "digits"
dataset_para = dict(train_size=2000, test_size=1000)

teacher_pretrained = False

img_size = 32
batch_size = 32

model_t = "resnet18"
lr_t = 1e-3
max_epoch_t = 15

model_s = "resnet10t"
lr_s = 1e-3
max_epoch_s = 15

embed_dim = 128
workers = 2
seed = 0

# digits are not mirror-symmetric: no flips; a lighter RandAugment for 32-pixel canvases
transform = dict(cutout=0.25, randaugment="rand-m5-n1-mstd0.5", hflip=0.0)

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

cache = dict(views=4)
