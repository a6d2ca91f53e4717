using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Alignment.Prox;

/// <summary>
/// The k-dim geometry of a low-rank reward f(Ay + c) under the cost ½Σwᵢ(yᵢ − xᵢ)² (DESIGN §3): the cheapest y with
/// Ay + c = z is y = x + W⁻¹AᵀG⁻¹(z − z₀) with G = AW⁻¹Aᵀ and z₀ = Ax + c, at cost ½(z − z₀)ᵀG⁻¹(z − z₀).
/// </summary>
internal sealed class FeatureGeometry
{
    public FeatureGeometry(FeatureReward reward, TransportCost cost)
    {
        Reward = reward;
        K = reward.FeatureCount;
        InverseWeights = new double[reward.Size];
        for (int i = 0; i < InverseWeights.Length; i++) InverseWeights[i] = 1 / cost.Weight(i);
        G = new double[K * K];
        for (int j = 0; j < K; j++)
            for (int l = 0; l <= j; l++)
            {
                var aj = reward.Feature(j);
                var al = reward.Feature(l);
                double sum = 0;
                for (int i = 0; i < aj.Length; i++) sum += aj[i] * al[i] * InverseWeights[i];
                G[j * K + l] = G[l * K + j] = sum;
            }
        GInverse = new double[K * K];
        Span<double> column = stackalloc double[K];
        for (int l = 0; l < K; l++)
        {
            column.Clear();
            column[l] = 1;
            if (!Numerics.SolveSymmetricPositive(G, column))
                throw new ArgumentException($"reward '{reward.Name}': its {K} features are linearly dependent (AW⁻¹Aᵀ is singular)");
            for (int j = 0; j < K; j++) GInverse[j * K + l] = column[j];
        }
        LargestEigenvalue = Numerics.LargestEigenvalue(G, K);
    }

    public FeatureReward Reward { get; }

    public int K { get; }

    /// <summary>1/wᵢ.</summary>
    public double[] InverseWeights { get; }

    /// <summary>G = AW⁻¹Aᵀ, row-major k × k.</summary>
    public double[] G { get; }

    /// <summary>G⁻¹.</summary>
    public double[] GInverse { get; }

    /// <summary>λ_max(G) (rounded up): ‖u‖²_{G⁻¹} ≥ ‖u‖²/λ_max.</summary>
    public double LargestEigenvalue { get; }

    /// <summary>M·v for a row-major k × k matrix M.</summary>
    public void Multiply(ReadOnlySpan<double> m, ReadOnlySpan<double> v, Span<double> result)
    {
        for (int j = 0; j < K; j++)
        {
            double s = 0;
            for (int l = 0; l < K; l++) s += m[j * K + l] * v[l];
            result[j] = s;
        }
    }

    /// <summary>uᵀMu.</summary>
    public double Quadratic(ReadOnlySpan<double> m, ReadOnlySpan<double> u)
    {
        Span<double> mu = stackalloc double[K];
        Multiply(m, u, mu);
        double s = 0;
        for (int j = 0; j < K; j++) s += u[j] * mu[j];
        return s;
    }

    /// <summary>y = x + W⁻¹Aᵀν, clamped into the box when one is given.</summary>
    public void Lift(ReadOnlySpan<float> x, ReadOnlySpan<double> nu, ValueBox? box, Span<double> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = x[i];
        for (int j = 0; j < K; j++)
        {
            var row = Reward.Feature(j);
            double c = nu[j];
            if (c == 0) continue;
            for (int i = 0; i < y.Length; i++) y[i] += c * row[i] * InverseWeights[i];
        }
        if (box is { } b)
            for (int i = 0; i < y.Length; i++) y[i] = b.Clamp(y[i]);
    }
}
