# Stand-in written for these tests: a config file with the keys and values of karpathy/nanoGPT's
# config/train_shakespeare_char.py (no code or comments of that repo). train.py runs it, then
# applies the --name=value overrides that follow it on the command line.

dataset = "shakespeare_char"
out_dir = "out-shakespeare-char"

# a 6-layer, 384-wide character model with a 256-character context
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
dropout = 0.2

# optimisation
batch_size = 64
gradient_accumulation_steps = 1
learning_rate = 1e-3
min_lr = 1e-4
beta2 = 0.99
max_iters = 5000
lr_decay_iters = 5000
warmup_iters = 100

# evaluation, logging and checkpoints: ckpt.pt is written only when the val loss improves,
# unless --always_save_checkpoint=True says otherwise
eval_interval = 250
eval_iters = 200
log_interval = 10
always_save_checkpoint = False

# no experiment tracking in the stand-in, but the keys are accepted
wandb_log = False
wandb_project = "shakespeare-char"
wandb_run_name = "mini-gpt"
