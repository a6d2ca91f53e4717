using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>Samples of a baseline and what they cost.</summary>
/// <param name="Samples">The output samples, one after another.</param>
/// <param name="Count">Output samples.</param>
/// <param name="NetworkEvaluations">Network evaluations spent.</param>
/// <param name="EffectiveSampleSize">(Σw)²/Σw² of the importance weights (importance resampling), or the number of draws (best-of-N).</param>
public sealed record BaselineResult(float[] Samples, int Count, long NetworkEvaluations, double EffectiveSampleSize);

/// <summary>
/// Baselines for the KL-aligned law q ∝ p·exp(r/λ), for comparison only (DESIGN §2): they need no structure in r but
/// degrade as the tilt gets strong, which is what the exact tilts and mixtures avoid.
/// </summary>
public static class Baselines
{
    /// <summary>
    /// Sampling-importance-resampling: <paramref name="proposals"/> draws from p, weights ∝ exp(r/λ) (normalised in log
    /// space, so no overflow), <paramref name="count"/> multinomial resamples. Consistent as proposals → ∞, biased for any
    /// finite number; its effective sample size collapses under strong tilts.
    /// </summary>
    public static BaselineResult ImportanceResampling(IDenoiser denoiser, Sampler sampler, Reward reward, double lambda, int proposals, int count,
                                                      long seed, int batchSize = 256)
    {
        var draws = Generation.Run(denoiser, sampler, new GenerationRequest { Count = proposals, BatchSize = batchSize, Seed = seed });
        var logWeights = reward.EvaluateBatch(draws.Samples).Select(r => r / lambda).ToArray();
        var weights = Numerics.Softmax(logWeights);
        double ess = 1 / weights.Sum(w => w * w);
        var cumulative = new double[proposals];
        double sum = 0;
        for (int i = 0; i < proposals; i++) cumulative[i] = sum += weights[i];
        // Resampling uniforms from a stream past the draws' own indices.
        var stream = new NoiseStream(seed, proposals);
        int size = denoiser.SampleSize;
        var samples = new float[(long)count * size];
        for (int i = 0; i < count; i++)
        {
            int pick = Array.BinarySearch(cumulative, stream.NextDouble() * sum);
            pick = Math.Min(pick < 0 ? ~pick : pick, proposals - 1);
            draws.Samples.AsSpan(pick * size, size).CopyTo(samples.AsSpan(i * size, size));
        }
        return new BaselineResult(samples, count, draws.NetworkEvaluations, ess);
    }

    /// <summary>Best-of-N: for each output, <paramref name="n"/> draws from p and the one with the largest reward.</summary>
    public static BaselineResult BestOfN(IDenoiser denoiser, Sampler sampler, Reward reward, int n, int count, long seed, int batchSize = 256)
    {
        var draws = Generation.Run(denoiser, sampler, new GenerationRequest { Count = n * count, BatchSize = batchSize, Seed = seed });
        var rewards = reward.EvaluateBatch(draws.Samples);
        int size = denoiser.SampleSize;
        var samples = new float[(long)count * size];
        for (int i = 0; i < count; i++)
        {
            int best = i * n;
            for (int j = i * n + 1; j < (i + 1) * n; j++) if (rewards[j] > rewards[best]) best = j;
            draws.Samples.AsSpan(best * size, size).CopyTo(samples.AsSpan(i * size, size));
        }
        return new BaselineResult(samples, count, draws.NetworkEvaluations, n);
    }
}
