using OnnxAlign.Rewards;
namespace OnnxAlign.Core;

/// <summary>
/// Self-normalised importance weighting (DESIGN §1d, §8): weights from log weights, the effective sample size, weighted
/// means with their delta-method standard errors, log-mean-exp for normalising constants, and systematic resampling.
/// </summary>
public static class WeightedSamples
{
    /// <summary>w_i = e^{ℓ_i}/Σ_j e^{ℓ_j} (overflow-safe). Non-finite log weights are an error: they must be handled before.</summary>
    public static double[] Normalize(ReadOnlySpan<double> logWeights)
    {
        if (logWeights.Length == 0) throw new ArgumentException("no weights", nameof(logWeights));
        foreach (double l in logWeights)
            if (double.IsNaN(l) || double.IsPositiveInfinity(l)) throw new ArgumentException("a log weight is NaN or +∞", nameof(logWeights));
        return Numerics.Softmax(logWeights);
    }

    /// <summary>Kish's effective sample size (Σw)²/Σw² of normalised weights: n for equal weights, 1 when one weight dominates.</summary>
    public static double EffectiveSampleSize(ReadOnlySpan<double> weights)
    {
        double sum = 0, sumSq = 0;
        foreach (double w in weights) { sum += w; sumSq += w * w; }
        return sumSq > 0 ? sum * sum / sumSq : 0;
    }

    /// <summary>
    /// The self-normalised estimate Σ w_i v_i of E[v] and its delta-method standard error √(Σ w_i² (v_i − μ)²)
    /// (weights normalised; equal weights give the usual s/√n up to the factor √((n−1)/n)).
    /// </summary>
    public static (double Mean, double StandardError) Mean(IReadOnlyList<double> values, ReadOnlySpan<double> weights)
    {
        if (values.Count != weights.Length) throw new ArgumentException("values and weights differ in length");
        double mean = 0;
        for (int i = 0; i < weights.Length; i++) mean += weights[i] * values[i];
        double variance = 0;
        for (int i = 0; i < weights.Length; i++) variance += weights[i] * weights[i] * (values[i] - mean) * (values[i] - mean);
        return (mean, Math.Sqrt(variance));
    }

    /// <summary>Weighted standard deviation √(Σ w_i (v_i − μ)²) of normalised weights.</summary>
    public static double StandardDeviation(IReadOnlyList<double> values, ReadOnlySpan<double> weights)
    {
        var (mean, _) = Mean(values, weights);
        double variance = 0;
        for (int i = 0; i < weights.Length; i++) variance += weights[i] * (values[i] - mean) * (values[i] - mean);
        return Math.Sqrt(variance);
    }

    /// <summary>
    /// log((1/n) Σ e^{ℓ_i}), the log of an importance-sampling estimate of a normalising constant, and its delta-method
    /// standard error sd(e^ℓ)/(√n · mean(e^ℓ)).
    /// </summary>
    public static (double Value, double StandardError) LogMeanExp(ReadOnlySpan<double> logWeights)
    {
        int n = logWeights.Length;
        double logSum = Numerics.LogSumExp(logWeights);
        double value = logSum - Math.Log(n);
        double sumSq = 0;
        foreach (double l in logWeights) { double r = Math.Exp(l - value); sumSq += (r - 1) * (r - 1); }  // e^ℓ / mean
        double se = n > 1 ? Math.Sqrt(sumSq / (n - 1) / n) : double.PositiveInfinity;
        return (value, se);
    }

    /// <summary>
    /// Systematic resampling: <paramref name="count"/> indices drawn with probabilities <paramref name="weights"/>
    /// (normalised) from one uniform <paramref name="uniform"/> ∈ [0, 1): index i appears ⌊count·w_i⌋ or ⌈count·w_i⌉
    /// times, the lowest-variance unbiased scheme (Douc &amp; Cappé 2005). Indices come out in ascending order.
    /// </summary>
    public static int[] Systematic(ReadOnlySpan<double> weights, int count, double uniform)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count));
        if (!(uniform >= 0 && uniform < 1)) throw new ArgumentOutOfRangeException(nameof(uniform));
        double total = 0;
        foreach (double w in weights) total += w;
        if (!(total > 0)) throw new ArgumentException("weights sum to zero", nameof(weights));
        var result = new int[count];
        double cumulative = weights[0] / total;
        int i = 0;
        for (int k = 0; k < count; k++)
        {
            double u = (k + uniform) / count;
            while (u >= cumulative && i < weights.Length - 1) cumulative += weights[++i] / total;
            result[k] = i;
        }
        return result;
    }
}
