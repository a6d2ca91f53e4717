using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Evaluation;

/// <summary>
/// Ground truth for the KL-aligned law of the features on a Gaussian-mixture base (DESIGN §2): z = Ax + c is again a
/// Gaussian mixture (here with AAᵀ = ρ²I, so it stays isotropic), and the aligned law of z is ∝ GMM_k(z)·e^{g(z)},
/// tabulated on a k-dimensional grid (k = 1, 2) for moments and marginal CDFs.
/// </summary>
public sealed class FeatureGridLaw
{
    private readonly double[] _axis;
    private readonly double[][] _marginalCdf;

    /// <summary>Tabulates ∝ GMM_z(z)·e^{g(z)} on [lo, hi]^k with n points per axis.</summary>
    public FeatureGridLaw(GaussianMixture baseLaw, FeatureReward features, Func<double[], double> logTilt, double lo, double hi, int n = 2001)
    {
        int k = features.FeatureCount;
        if (k is < 1 or > 2) throw new ArgumentException("the grid ground truth handles k = 1 or 2");
        var projected = Project(baseLaw, features);
        _axis = Enumerable.Range(0, n).Select(i => lo + (hi - lo) * i / (n - 1)).ToArray();
        int cells = k == 1 ? n : n * n;
        var logDensity = new double[cells];
        var z = new double[k];
        for (int c = 0; c < cells; c++)
        {
            z[0] = _axis[c % n];
            if (k == 2) z[1] = _axis[c / n];
            logDensity[c] = projected.LogDensity(z) + logTilt(z);
        }
        var density = Numerics.Softmax(logDensity);
        Mean = new double[k];
        Covariance = new double[k * k];
        _marginalCdf = new double[k][];
        for (int j = 0; j < k; j++)
        {
            var marginal = new double[n];
            for (int c = 0; c < cells; c++) marginal[j == 0 ? c % n : c / n] += density[c];
            _marginalCdf[j] = new double[n];
            double s = 0;
            for (int i = 0; i < n; i++) { s += marginal[i]; _marginalCdf[j][i] = s - marginal[i] / 2; }
            for (int c = 0; c < cells; c++) Mean[j] += density[c] * _axis[j == 0 ? c % n : c / n];
        }
        for (int c = 0; c < cells; c++)
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++)
                    Covariance[i * k + j] += density[c] * (_axis[i == 0 ? c % n : c / n] - Mean[i]) * (_axis[j == 0 ? c % n : c / n] - Mean[j]);
    }

    /// <summary>E[z].</summary>
    public double[] Mean { get; }

    /// <summary>Cov[z], row-major k × k.</summary>
    public double[] Covariance { get; }

    /// <summary>P(z_j ≤ v), linear between grid points.</summary>
    public double MarginalCdf(int j, double v)
    {
        var cdf = _marginalCdf[j];
        double position = (v - _axis[0]) / (_axis[1] - _axis[0]);
        if (position <= 0) return 0;
        if (position >= _axis.Length - 1) return 1;
        int i = (int)position;
        return cdf[i] + (position - i) * (cdf[i + 1] - cdf[i]);
    }

    /// <summary>The law of z = Ax + c under an isotropic mixture, for A with orthogonal rows of equal norm ρ.</summary>
    public static GaussianMixture Project(GaussianMixture mixture, FeatureReward features)
    {
        int k = features.FeatureCount;
        double rho2 = Dot(features.Feature(0), features.Feature(0));
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++)
                if (Math.Abs(Dot(features.Feature(i), features.Feature(j)) - (i == j ? rho2 : 0)) > 1e-6 * rho2)
                    throw new ArgumentException("the ground truth needs AAᵀ = ρ²I (orthogonal feature rows of equal norm)");
        var means = mixture.Means.Select(mu =>
        {
            var z = new double[k];
            features.Project(mu, z);
            return z;
        }).ToArray();
        return new GaussianMixture { Weights = mixture.Weights, Means = means, Stds = mixture.Stds.Select(s => s * Math.Sqrt(rho2)).ToArray() };
    }

    private static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}
