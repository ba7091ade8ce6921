"""The seeds' own loops, ported faithfully: the anchors of the benchmarks.

tests/nn/test_attention.py compares rnnspec with `seed000_loop`; benchmarks/attention.py
and benchmarks/kernels.py time rnnspec against these.
"""

import torch
import torch.nn.functional as F
from torch import nn


def seed000_as_written(attn: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Seed 000's loop as the seed runs it, one (T, H) sequence at a time."""
    outputs = []
    for seq in x.unbind(0):  # the seed's model takes one sequence: batch 1
        content_vectors = [seq[0].view(1, -1)]
        for i in range(1, seq.size(0)):
            prev_states = seq[:i]
            current_state = seq[i].view(1, -1)
            attn_prod = torch.mm(attn(current_state), prev_states.t())
            attn_weights = F.softmax(attn_prod, dim=1)
            content_vectors.append(torch.mm(attn_weights, prev_states))
        outputs.append(torch.cat(content_vectors))
    return torch.stack(outputs)  # (B, T, H)


def seed000_loop(attn: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Seed 000's per-step loop, batched over B: x (B, T, H) -> (B, T, H)."""
    content_vectors = [x[:, 0:1]]
    for i in range(1, x.size(1)):
        prev_states = x[:, :i]  # (B, i, H)
        current_state = x[:, i : i + 1]  # (B, 1, H)
        attn_prod = torch.bmm(attn(current_state), prev_states.transpose(1, 2))
        attn_weights = F.softmax(attn_prod, dim=2)  # (B, 1, i)
        context = torch.bmm(attn_weights, prev_states)  # (B, 1, H)
        content_vectors.append(context)
    return torch.cat(content_vectors, 1)


class Seed002Loop(nn.Module):
    """Seed 002's from-scratch LSTM loops (weights taken from an nn.LSTM).

    fused=False: the naive version, 8 matmuls per step (x_t @ U_i + h_t @ V_i + b_i
    for each gate); fused=True: its optimized version, 2 matmuls per step
    (x_t @ W + h_t @ U + bias, then the gates split).
    """

    def __init__(self, lstm: nn.LSTM, fused: bool):
        super().__init__()
        H = lstm.hidden_size
        w_ih, w_hh = lstm.weight_ih_l0.detach(), lstm.weight_hh_l0.detach()
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
        self.fused, self.hidden_size = fused, H
        self.W = nn.Parameter(w_ih.t().contiguous())  # (input, 4H), gates i f g o
        self.U = nn.Parameter(w_hh.t().contiguous())  # (H, 4H)
        self.bias = nn.Parameter(bias.clone())
        self.U_x = nn.ParameterList(
            nn.Parameter(w.contiguous()) for w in self.W.chunk(4, 1)
        )
        self.V_h = nn.ParameterList(
            nn.Parameter(w.contiguous()) for w in self.U.chunk(4, 1)
        )
        self.b = nn.ParameterList(nn.Parameter(b.clone()) for b in self.bias.chunk(4))

    def forward(self, x):
        bs, seq_sz, _ = x.size()
        HS = self.hidden_size
        h_t = x.new_zeros(bs, HS)
        c_t = x.new_zeros(bs, HS)
        hidden_seq = []
        for t in range(seq_sz):
            x_t = x[:, t, :]
            if self.fused:
                gates = x_t @ self.W + h_t @ self.U + self.bias
                i_t = torch.sigmoid(gates[:, :HS])
                f_t = torch.sigmoid(gates[:, HS : HS * 2])
                g_t = torch.tanh(gates[:, HS * 2 : HS * 3])
                o_t = torch.sigmoid(gates[:, HS * 3 :])
            else:
                U, V, b = self.U_x, self.V_h, self.b
                i_t = torch.sigmoid(x_t @ U[0] + h_t @ V[0] + b[0])
                f_t = torch.sigmoid(x_t @ U[1] + h_t @ V[1] + b[1])
                g_t = torch.tanh(x_t @ U[2] + h_t @ V[2] + b[2])
                o_t = torch.sigmoid(x_t @ U[3] + h_t @ V[3] + b[3])
            c_t = f_t * c_t + i_t * g_t
            h_t = o_t * torch.tanh(c_t)
            hidden_seq.append(h_t.unsqueeze(0))
        hidden_seq = torch.cat(hidden_seq, dim=0).transpose(0, 1).contiguous()
        return hidden_seq, (h_t, c_t)
