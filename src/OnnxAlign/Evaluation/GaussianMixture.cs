using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Rewards;

namespace OnnxAlign.Evaluation;

/// <summary>
/// An isotropic Gaussian mixture p0 = Σ π_k N(μ_k, s_k² I): the data law of the toy models, whose scores are known
/// exactly under any VP schedule (p_t = Σ π_k N(α μ_k, (α² s_k² + σ²) I)), and the ground truth of the tests.
/// Stored beside a toy model as <c>mixture.json</c>.
/// </summary>
public sealed record GaussianMixture
{
    /// <summary>Mixture weights π_k (sum to 1).</summary>
    [JsonPropertyName("weights")] public required double[] Weights { get; init; }

    /// <summary>Component means μ_k, each of dimension d.</summary>
    [JsonPropertyName("means")] public required double[][] Means { get; init; }

    /// <summary>Component standard deviations s_k.</summary>
    [JsonPropertyName("stds")] public required double[] Stds { get; init; }

    /// <summary>Dimension d.</summary>
    [JsonIgnore] public int Dimension => Means[0].Length;

    /// <summary>Number of components K.</summary>
    [JsonIgnore] public int Components => Weights.Length;

    /// <summary>E[x] = Σ π_k μ_k.</summary>
    public double[] Mean()
    {
        var m = new double[Dimension];
        for (int k = 0; k < Components; k++)
            for (int i = 0; i < Dimension; i++) m[i] += Weights[k] * Means[k][i];
        return m;
    }

    /// <summary>Cov[x] = Σ π_k (s_k² I + μ_k μ_kᵀ) − m mᵀ, row-major d × d.</summary>
    public double[] Covariance()
    {
        int d = Dimension;
        var m = Mean();
        var c = new double[d * d];
        for (int k = 0; k < Components; k++)
            for (int i = 0; i < d; i++)
            {
                c[i * d + i] += Weights[k] * Stds[k] * Stds[k];
                for (int j = 0; j < d; j++) c[i * d + j] += Weights[k] * Means[k][i] * Means[k][j];
            }
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) c[i * d + j] -= m[i] * m[j];
        return c;
    }

    /// <summary>
    /// The exponential tilt q ∝ p·exp(⟨θ, x⟩), again a mixture (DESIGN §1): means μ_k + s_k²θ, weights
    /// ∝ π_k exp(⟨θ, μ_k⟩ + s_k²|θ|²/2).
    /// </summary>
    public GaussianMixture Tilted(ReadOnlySpan<double> theta)
    {
        var logW = new double[Components];
        var means = new double[Components][];
        double thetaSq = 0;
        foreach (double t in theta) thetaSq += t * t;
        for (int k = 0; k < Components; k++)
        {
            double s2 = Stds[k] * Stds[k], dot = 0;
            means[k] = new double[Dimension];
            for (int i = 0; i < Dimension; i++)
            {
                dot += theta[i] * Means[k][i];
                means[k][i] = Means[k][i] + s2 * theta[i];
            }
            logW[k] = Math.Log(Weights[k]) + dot + s2 * thetaSq / 2;
        }
        return this with { Weights = Numerics.Softmax(logW), Means = means };
    }

    /// <summary>log Z(θ) = log E_p[exp⟨θ, x⟩] = log Σ π_k exp(⟨θ, μ_k⟩ + s_k²|θ|²/2).</summary>
    public double LogPartition(ReadOnlySpan<double> theta)
    {
        var terms = new double[Components];
        double thetaSq = 0;
        foreach (double t in theta) thetaSq += t * t;
        for (int k = 0; k < Components; k++)
        {
            double dot = 0;
            for (int i = 0; i < Dimension; i++) dot += theta[i] * Means[k][i];
            terms[k] = Math.Log(Weights[k]) + dot + Stds[k] * Stds[k] * thetaSq / 2;
        }
        return Numerics.LogSumExp(terms);
    }

    /// <summary>log p0(x) = log Σ π_k N(x; μ_k, s_k² I).</summary>
    public double LogDensity(ReadOnlySpan<double> x)
    {
        var terms = new double[Components];
        for (int k = 0; k < Components; k++)
        {
            double r2 = 0;
            for (int i = 0; i < Dimension; i++) r2 += (x[i] - Means[k][i]) * (x[i] - Means[k][i]);
            double s2 = Stds[k] * Stds[k];
            terms[k] = Math.Log(Weights[k]) - r2 / (2 * s2) - 0.5 * Dimension * Math.Log(2 * Math.PI * s2);
        }
        return Numerics.LogSumExp(terms);
    }

    /// <summary>The index of the most probable component for x (posterior under the mixture).</summary>
    public int Classify(ReadOnlySpan<float> x)
    {
        int best = 0;
        double bestScore = double.NegativeInfinity;
        for (int k = 0; k < Components; k++)
        {
            double s2 = Stds[k] * Stds[k], dist = 0;
            for (int i = 0; i < Dimension; i++) { double diff = x[i] - Means[k][i]; dist += diff * diff; }
            double score = Math.Log(Weights[k]) - Dimension * Math.Log(s2) / 2 - dist / (2 * s2);
            if (score > bestScore) { bestScore = score; best = k; }
        }
        return best;
    }

    /// <summary>Reads <c>mixture.json</c>.</summary>
    /// <exception cref="ConfigException">Unreadable, not JSON, or not a mixture (weights, means and stds of one length, positive stds).</exception>
    public static GaussianMixture Load(string path)
    {
        GaussianMixture? mixture;
        try { mixture = JsonSerializer.Deserialize<GaussianMixture>(File.ReadAllText(path)); }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new ConfigException($"{path}: not a readable mixture ({e.Message})");
        }
        if (mixture is null || mixture.Weights.Length == 0 || mixture.Means.Length != mixture.Weights.Length || mixture.Stds.Length != mixture.Weights.Length
            || mixture.Means.Any(m => m is null || m.Length != mixture.Means[0].Length) || mixture.Stds.Any(s => !(s > 0)) || mixture.Weights.Any(w => !(w >= 0)))
            throw new ConfigException($"{path}: expected weights, means and stds of one length per component (stds > 0, weights ≥ 0)");
        return mixture;
    }

    /// <summary>The JSON text of the mixture.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true });
}
