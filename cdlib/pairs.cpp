// NeuMF's pair logits with a hand-written backward, as one autograd node (`pairkernel.py`): the
// forward operations of `models.NeuMF._user_parts` and `_pairs`, and in the backward the operations
// PyTorch's autograd formulas call on their graph (derivatives.yaml; `mm_mat1_backward` and
// `mm_mat2_backward`, whose product follows the operands' strides: `mm_grads`), on operands of the
// same layouts, broadcast gradients summed by `at::sum_to` as the engine sums them, and the slices'
// gradients of one weight summed as its accumulation does. The same ATen calls on the same tensors:
// the same numbers, bit for bit; `pairkernel.load` checks that before it is used. What it saves is
// autograd's bookkeeping and Python's cost per operation: ~20 nodes a step at a student's size.
#include <torch/extension.h>
#include <ATen/ExpandUtils.h>

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// (d mat1, d mat2) of mat1.mm(mat2), as mm_mat1_backward and mm_mat2_backward compute them
static std::pair<Tensor, Tensor> mm_grads(const Tensor& grad, const Tensor& mat1, const Tensor& mat2) {
  auto s = mat1.strides();
  auto z = mat1.sizes();
  Tensor g1 = (s[0] == 1 && s[1] == z[0]) ? mat2.mm(grad.t()).t() : grad.mm(mat2.t());
  s = mat2.strides();
  z = mat2.sizes();
  Tensor g2 = (s[0] == 1 && s[1] == z[0]) ? grad.t().mm(mat1).t() : mat1.t().mm(grad);
  return {g1, g2};
}

// a look-up's gradient as embedding_sparse_backward gives it: the looked-up rows', uncoalesced
static Tensor rows_grad(const Tensor& ids, const Tensor& values, int64_t n) {
  return at::_sparse_coo_tensor_unsafe(ids.reshape({1, -1}), values, {n, values.size(1)});
}

struct PairLogits : public torch::autograd::Function<PairLogits> {
  static Tensor forward(AutogradContext* ctx, Tensor users, Tensor rows, Tensor items, int64_t d,
                        Tensor gu_w, Tensor gi_w, Tensor mu_w, Tensor mi_w, Tensor w1, Tensor b1,
                        Tensor w2, Tensor b2, Tensor wo, Tensor bo) {
    int64_t e = mu_w.size(1);
    // _user_parts: p_u * h_GMF [B x d], W_u p'_u + b [B x e]
    auto gu = at::embedding(gu_w, users);
    auto w_g = wo.select(0, 0).slice(0, 0, d);
    auto gmf_user = gu * w_g;
    auto mu = at::embedding(mu_w, users);
    auto w1u = w1.slice(1, 0, e).t();
    auto uh = mu.mm(w1u) + b1;
    // _pairs
    auto a = gmf_user.index_select(0, rows);
    auto gi = at::embedding(gi_w, items);
    auto gmf = a * gi;
    auto mi = at::embedding(mi_w, items);
    auto w1i = w1.slice(1, e).t();
    auto h1 = at::relu(uh.index_select(0, rows) + mi.mm(w1i));
    auto w2t = w2.t();
    auto h2 = at::relu(at::addmm(b2, h1, w2t));
    auto w_h = wo.select(0, 0).slice(0, d);
    auto z = gmf.sum(-1) + h2.mv(w_h) + bo;
    ctx->save_for_backward({users, rows, items, gu, mu, a, gi, mi, h1, h2, w1u, w1i, w2t, w_g, w_h,
                            w1, wo, b1, b2, bo});
    ctx->saved_data["sizes"] = std::vector<int64_t>{d, gu_w.size(0), gi_w.size(0)};
    return z;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const Tensor &users = s[0], &rows = s[1], &items = s[2], &gu = s[3], &mu = s[4], &a = s[5];
    const Tensor &gi = s[6], &mi = s[7], &h1 = s[8], &h2 = s[9], &w1u = s[10], &w1i = s[11];
    const Tensor &w2t = s[12], &w_g = s[13], &w_h = s[14], &w1 = s[15], &wo = s[16], &b1 = s[17];
    const Tensor &b2 = s[18], &bo = s[19];
    auto sizes = ctx->saved_data["sizes"].toIntVector();
    int64_t d = sizes[0], n_users = sizes[1], n_items = sizes[2], e = mu.size(1);
    const Tensor& dz = grads[0];
    // z = gmf.sum(-1) + h2.mv(w_h) + bo (mv: self grad.ger(vec), vec self.t().mv(grad))
    auto d_bo = at::sum_to(dz, bo.sizes());
    auto dgmf = dz.unsqueeze(-1).expand(gi.sizes());
    auto d_h2 = dz.outer(w_h);
    auto d_wh = h2.t().mv(dz);
    // h2 = relu(addmm(b2, h1, w2.t()))
    auto d_pre2 = at::threshold_backward(d_h2, h2, 0);
    auto d_b2 = at::sum_to(d_pre2, b2.sizes());
    auto [d_h1, d_w2t] = mm_grads(d_pre2, h1, w2t);
    // h1 = relu(uh[rows] + mi.mm(w1i)), uh = mu.mm(w1u) + b1
    auto d_pre = at::threshold_backward(d_h1, h1, 0);
    auto [d_mi, d_w1i] = mm_grads(d_pre, mi, w1i);
    auto d_uh = at::zeros({users.size(0), e}, dz.options()).index_add_(0, rows, d_pre);
    auto d_b1 = at::sum_to(d_uh, b1.sizes());
    auto [d_mu, d_w1u] = mm_grads(d_uh, mu, w1u);
    // gmf = (gu * w_g)[rows] * gi
    auto d_a = dgmf * gi;
    auto d_gi = dgmf * a;
    auto d_gmf_user = at::zeros({users.size(0), d}, dz.options()).index_add_(0, rows, d_a);
    auto d_gu = d_gmf_user * w_g;
    auto d_wg = at::sum_to(d_gmf_user * gu, w_g.sizes());
    // w1 = [w1u^T, w1i^T] along its columns; wo[0] = [w_g, w_h]
    auto d_w1 = at::zeros(w1.sizes(), dz.options());
    auto d_w1_hi = at::zeros(w1.sizes(), dz.options());
    d_w1.slice(1, 0, e).copy_(d_w1u.t());
    d_w1_hi.slice(1, e).copy_(d_w1i.t());
    d_w1.add_(d_w1_hi);
    auto d_wo = at::zeros(wo.sizes(), dz.options());
    auto d_wo_hi = at::zeros(wo.sizes(), dz.options());
    d_wo.select(0, 0).slice(0, 0, d).copy_(d_wg);
    d_wo_hi.select(0, 0).slice(0, d).copy_(d_wh);
    d_wo.add_(d_wo_hi);
    return {Tensor(), Tensor(), Tensor(), Tensor(),
            rows_grad(users, d_gu, n_users), rows_grad(items, d_gi, n_items),
            rows_grad(users, d_mu, n_users), rows_grad(items, d_mi, n_items),
            d_w1, d_b1, d_w2t.t(), d_b2, d_wo, d_bo};
  }
};

Tensor pair_logits(Tensor users, Tensor rows, Tensor items, int64_t d, Tensor gu_w, Tensor gi_w,
                   Tensor mu_w, Tensor mi_w, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor wo,
                   Tensor bo) {
  return PairLogits::apply(users, rows, items, d, gu_w, gi_w, mu_w, mi_w, w1, b1, w2, b2, wo, bo);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("pair_logits", &pair_logits); }
