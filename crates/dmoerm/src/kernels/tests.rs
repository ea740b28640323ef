//! The CPU fast paths against burn's own ops and f64 references.

use super::*;

/// `n` values spread over `-half_range .. half_range`, a different sequence per `seed`.
fn pseudo_random(n: usize, seed: u32, half_range: f32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / (500.0 / half_range) - half_range)
        .collect()
}

#[test]
fn erf_and_gelu_match_f64_references() {
    let mut worst_erf: f64 = 0.0;
    let mut worst_gelu: f64 = 0.0;
    for i in -200_000..=200_000 {
        let x = i as f32 * 6e-5; // -12 .. 12
        let xd = x as f64;
        let erf_ref = libm::erf(xd);
        worst_erf = worst_erf.max((erf(x) as f64 - erf_ref).abs());
        let gelu_ref = 0.5 * xd * (1.0 + libm::erf(xd / std::f64::consts::SQRT_2));
        worst_gelu = worst_gelu.max((gelu_f32(x) as f64 - gelu_ref).abs() / xd.abs().max(1.0));
    }
    assert!(worst_erf < 1e-6, "erf: worst |error| {worst_erf:e}");
    assert!(worst_gelu < 1e-6, "gelu: worst error {worst_gelu:e} (relative to max(|x|, 1))");
    assert!(erf(0.0).abs() < 1e-6 && erf(-0.7) == -erf(0.7), "erf is odd and 0 at 0");
    assert_eq!(erf(f32::INFINITY), 1.0);
    assert_eq!(erf(-30.0), -1.0);
}

#[test]
fn linear_matches_burns_with_and_without_bias_over_uneven_row_chunks() {
    let device = Device::flex();
    let rand = |n, seed| pseudo_random(n, seed, 1.0);
    // 3 x 7 = 21 rows: the chunks of the threads (1 per thread) do not divide them evenly
    let (b, s, d_in, d_out) = (3, 7, 37, 19);
    let x = Tensor::<3>::from_data(TensorData::new(rand(b * s * d_in, 1), [b, s, d_in]), &device);
    let w = Tensor::<2>::from_data(TensorData::new(rand(d_in * d_out, 2), [d_in, d_out]), &device);
    let bias = Tensor::<1>::from_data(TensorData::new(rand(d_out, 3), [d_out]), &device);
    let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().expect("f32");
    let (w_host, b_host) = (PackedB::new(d_in, d_out, &rand(d_in * d_out, 2), d_out, 1), rand(d_out, 3));
    for bias in [None, Some(bias)] {
        let reference = values(burn::tensor::module::linear(x.clone(), w.clone(), bias.clone()));
        let b = bias.as_ref().map(|_| b_host.as_slice());
        let got = values(linear(&x, &w_host, b).expect("flex f32 takes the fast path"));
        let worst = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "bias {}: worst difference {worst:e}", bias.is_some());
    }
    // a shape that does not chain is not computed
    let w_short = PackedB::new(d_in - 1, d_out, &rand(d_in * d_out, 2), d_out, 1);
    assert!(linear(&x, &w_short, None).is_none());
    assert!(linear(&x, &w_host, Some(&b_host[1..])).is_none());
}

#[test]
fn rope_is_burns_rotation_bit_for_bit() {
    let device = Device::flex();
    let (b, s, heads, d) = (2, 5, 3, 8);
    let rand = |n, seed| pseudo_random(n, seed, 2.0);
    let (cos, sin) = (rand(s * d, 7), rand(s * d, 8));
    let x = Tensor::<4>::from_data(TensorData::new(rand(b * s * heads * d, 9), [b, s, heads, d]), &device);
    let table = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, s, 1, d]), &device);
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.clone().narrow(3, d / 2, d / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let want = x.clone() * table(&cos) + rotated * table(&sin);
    let got = rope_host(x.clone(), &cos, &sin).expect("flex f32");
    let values = |t: Tensor<4>| t.into_data().try_into_vec::<f32>().expect("f32");
    let (got, want) = (values(got), values(want));
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{got:?} != {want:?}");
    // tables of another length, an odd head dimension: not applied
    assert!(rope_host(x.clone(), &cos[1..], &sin).is_err());
    let odd = Tensor::<4>::from_data(TensorData::new(rand(s * 3, 1), [1, s, 1, 3]), &device);
    assert!(rope_host(odd, &rand(s * 3, 2), &rand(s * 3, 3)).is_err());
}

#[test]
fn attention_in_blocks_and_chunks_matches_burns_masked_attention_with_padding_gqa_causality_and_windows() {
    use super::attention::{attention_in_blocks, burn_attention, merge_heads, repeat_kv, QUERY_BLOCK};
    use crate::backbones::TokenBatch;
    let device = Device::flex();
    let (b, heads, kv, s, d) = (3, 4, 2, 7, 8);
    let rand = |n, seed| pseudo_random(n, seed, 2.0);
    let t = |v: Vec<f32>, h| Tensor::<4>::from_data(TensorData::new(v, [b, h, s, d]), &device);
    let (q, k, v) =
        (t(rand(b * heads * s * d, 1), heads), t(rand(b * kv * s * d, 2), kv), t(rand(b * kv * s * d, 3), kv));
    let rows: Vec<Vec<u32>> = [7, 3, 5].iter().map(|&n| vec![1; n]).collect();
    let batch = TokenBatch::new(&rows, 0, &device);
    let windows = [None, Some(1), Some(2), Some(3), Some(7)];
    let cases =
        [Visibility::BIDIRECTIONAL].into_iter().chain(windows.map(|window| Visibility { causal: true, window }));
    let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().expect("f32");
    for seen in cases {
        // the reference: burn's attention on the whole [B, H, S, S] mask
        let options = burn::tensor::ops::AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
        let mask = mask_rows(&batch.spans(), batch.dims(), heads, seen, 0..s, &device);
        let (rk, rv) = (repeat_kv(k.clone(), heads / kv), repeat_kv(v.clone(), heads / kv));
        let reference =
            values(merge_heads(burn::tensor::module::attention(q.clone(), rk, rv, Some(mask), None, options)));
        // padding queries see real keys even past a window: nothing becomes NaN
        assert!(reference.iter().all(|x| x.is_finite()), "{seen:?}: non-finite reference");
        let check = |got: Vec<f32>, what: &str| {
            assert!(got.iter().all(|x| x.is_finite()), "{seen:?} {what}: non-finite output");
            let worst = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{seen:?} {what}: worst difference {worst:e}");
        };
        // the flex kernel, in query blocks of every size (a block sees only its keys), on
        // the projections' layout [B, S, heads * d]
        for block in [1, 2, 3, QUERY_BLOCK] {
            let fast = attention_in_blocks(
                merge_heads(q.clone()),
                merge_heads(k.clone()),
                merge_heads(v.clone()),
                (heads, kv),
                &batch.spans(),
                seen.causal,
                seen.window,
                block,
            );
            check(values(fast.expect("flex f32")), &format!("kernel, blocks of {block}"));
        }
        // burn's attention in query chunks (wgpu, wasm, training), each with its mask rows
        for chunk in [1, 3, 7] {
            let mask = batch.attention_mask(seen);
            let out = burn_attention(q.clone(), k.clone(), v.clone(), &mask, &batch.spans(), chunk);
            check(values(out), &format!("burn, chunks of {chunk}"));
        }
    }
}

#[test]
fn attention_on_sequences_packed_in_one_row_gives_each_sequence_its_padded_rows_output() {
    use super::attention::{attention_in_blocks, burn_attention, QUERY_BLOCK};
    use crate::backbones::TokenBatch;
    let device = Device::flex();
    let (heads, kv, d, lengths) = (4, 2, 8, [7, 3, 5]);
    let (b, s, total) = (lengths.len(), 7, lengths.iter().sum::<usize>());
    let rand = |n, seed| pseudo_random(n, seed, 2.0);
    let (q, k, v) = (rand(b * s * heads * d, 1), rand(b * s * kv * d, 2), rand(b * s * kv * d, 3));
    let t = |v: Vec<f32>, rows: usize, width: usize| {
        Tensor::<3>::from_data(TensorData::new(v, [rows / s.min(rows), s.min(rows), width]), &device)
    };
    // the real rows of each padded row, one after another
    let pack = |x: &[f32], width: usize| -> Vec<f32> {
        lengths.iter().enumerate().flat_map(|(r, &len)| x[r * s * width..][..len * width].to_vec()).collect()
    };
    let padded_batch = TokenBatch::new(&lengths.map(|n| vec![1; n]), 0, &device);
    let packed_batch = padded_batch.packed().expect("uneven rows pack");
    assert_eq!(packed_batch.positions(), [(0..7).collect::<Vec<_>>(), (0..3).collect(), (0..5).collect()].concat());
    let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().expect("f32");
    for seen in [Visibility::BIDIRECTIONAL, Visibility::CAUSAL, Visibility { causal: true, window: Some(2) }] {
        let padded = attention_in_blocks(
            t(q.clone(), b * s, heads * d),
            t(k.clone(), b * s, kv * d),
            t(v.clone(), b * s, kv * d),
            (heads, kv),
            &padded_batch.spans(),
            seen.causal,
            seen.window,
            QUERY_BLOCK,
        );
        let want = pack(&values(padded.expect("flex f32")), heads * d);
        let one_row =
            |x: Vec<f32>, width| Tensor::<3>::from_data(TensorData::new(pack(&x, width), [1, total, width]), &device);
        for block in [1, 2, QUERY_BLOCK] {
            let got = attention_in_blocks(
                one_row(q.clone(), heads * d),
                one_row(k.clone(), kv * d),
                one_row(v.clone(), kv * d),
                (heads, kv),
                &packed_batch.spans(),
                seen.causal,
                seen.window,
                block,
            );
            let got = values(got.expect("flex f32"));
            // each sequence's rows alone (blocks of other sizes round differently)
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "{seen:?}, blocks of {block}: differs by {worst:e}");
        }
        // burn's attention with the packed mask (no key of another sequence)
        let split = |x: Vec<f32>, h: usize| {
            Tensor::<4>::from_data(TensorData::new(pack(&x, h * d), [1, total, h, d]), &device).swap_dims(1, 2)
        };
        let mask = packed_batch.attention_mask(seen);
        let out = burn_attention(
            split(q.clone(), heads),
            split(k.clone(), kv),
            split(v.clone(), kv),
            &mask,
            &packed_batch.spans(),
            4,
        );
        let worst = values(out).iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{seen:?}: burn's packed attention differs by {worst:e}");
    }
    // overlapping spans are refused, not raced on
    let overlapping = [Span { start: 0, len: 3, rows: 3 }, Span { start: 2, len: 3, rows: 3 }];
    let one = |w: usize| Tensor::<3>::from_data(TensorData::new(vec![0.0; 5 * w], [1, 5, w]), &device);
    let refused =
        attention_in_blocks(one(heads * d), one(kv * d), one(kv * d), (heads, kv), &overlapping, false, None, 2);
    assert!(refused.is_err());
}

#[test]
fn silu_and_rms_norm_agree_with_burns_ops() {
    let device = Device::flex();
    let values: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.02).collect();
    let x = Tensor::<2>::from_data(TensorData::new(values, [40, 100]), &device);
    let worst = |a: Tensor<2>, b: Tensor<2>| {
        let (a, b) =
            (a.into_data().try_into_vec::<f32>().expect("f32"), b.into_data().try_into_vec::<f32>().expect("f32"));
        a.iter().zip(&b).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0f32, f32::max)
    };
    let w = silu(x.clone()).sub(burn::tensor::activation::silu(x.clone()));
    assert!(worst(w, x.clone().zeros_like()) < 1e-6, "silu");
    let weight = Tensor::<1>::from_data(
        TensorData::new((0..100).map(|i| 0.5 + i as f32 * 0.01).collect::<Vec<_>>(), [100]),
        &device,
    );
    let fast = rms_norm_host(x.clone(), &weight, 1e-6).expect("flex f32");
    let rms = x.clone().square().mean_dim(1).add_scalar(1e-6).sqrt();
    let reference = x.div(rms).mul(weight.unsqueeze());
    assert!(worst(fast, reference) < 1e-6, "rms_norm");
}

#[test]
fn the_fast_path_agrees_with_burns_gelu() {
    let device = Device::flex();
    let values: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.003).collect();
    let x = Tensor::<2>::from_data(TensorData::new(values, [40, 100]), &device);
    let fast = gelu(x.clone()).into_data().try_into_vec::<f32>().expect("f32");
    let burn = burn::tensor::activation::gelu(x).into_data().try_into_vec::<f32>().expect("f32");
    let worst = fast.iter().zip(&burn).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "worst difference {worst:e}");
}
