using MathNet.Numerics.LinearAlgebra;
using OnnxAlign.Core;

namespace OnnxAlign.Evaluation;

/// <summary>Mean and covariance of evaluator features: what the Fréchet distance compares.</summary>
/// <param name="Mean">μ (F values).</param>
/// <param name="Covariance">Σ, row-major F × F.</param>
/// <param name="Count">Samples they were estimated from.</param>
public sealed record FeatureStatistics(double[] Mean, double[] Covariance, int Count)
{
    /// <summary>μ and Σ of the features of an evaluation.</summary>
    public static FeatureStatistics Of(Evaluation evaluation) =>
        new(Numerics.ColumnMeans(evaluation.Features, evaluation.FeatureCount),
            Numerics.ColumnCovariance(evaluation.Features, evaluation.FeatureCount), evaluation.Count);

    /// <summary>
    /// The Fréchet distance between the Gaussians N(μ₁, Σ₁) and N(μ₂, Σ₂) (as in FID, Heusel et al. 2017):
    /// ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁^{½} Σ₂ Σ₁^{½})^{½}), with the square roots of the symmetric PSD matrices by
    /// eigendecomposition (negative round-off eigenvalues clipped to 0).
    /// </summary>
    public double FrechetDistance(FeatureStatistics other)
    {
        int f = Mean.Length;
        var a = Matrix<double>.Build.Dense(f, f, (i, j) => Covariance[i * f + j]);
        var b = Matrix<double>.Build.Dense(f, f, (i, j) => other.Covariance[i * f + j]);
        var rootA = SquareRoot(a);
        var inner = rootA * b * rootA;
        double trace = a.Trace() + b.Trace() - 2 * SquareRoot((inner + inner.Transpose()) / 2).Trace();
        double shift = 0;
        for (int i = 0; i < f; i++) shift += (Mean[i] - other.Mean[i]) * (Mean[i] - other.Mean[i]);
        return shift + trace;
    }

    private static Matrix<double> SquareRoot(Matrix<double> m)
    {
        var evd = ((m + m.Transpose()) / 2).Evd(Symmetricity.Symmetric);
        var roots = evd.EigenValues.Select(e => Math.Sqrt(Math.Max(e.Real, 0))).ToArray();
        return evd.EigenVectors * Matrix<double>.Build.DenseOfDiagonalArray(roots) * evd.EigenVectors.Transpose();
    }
}

/// <summary>The sample-quality figures of the model card (issue #6): class histogram, confidence and Fréchet distance.</summary>
/// <param name="ClassShares">Fraction of samples predicted as each class.</param>
/// <param name="MeanConfidence">Mean of the largest softmax probability.</param>
/// <param name="FrechetDistance">Fréchet distance of the samples' evaluator features to the reference (test set); null without features or reference statistics.</param>
/// <param name="Count">Samples evaluated.</param>
public sealed record SampleQuality(double[] ClassShares, double MeanConfidence, double? FrechetDistance, int Count)
{
    /// <summary>The largest |share − 1/C| over classes, in percentage points.</summary>
    public double LargestDeviationPoints => ClassShares.Max(s => Math.Abs(s - 1.0 / ClassShares.Length)) * 100;

    /// <summary>Measures an evaluation against reference feature statistics (null: no Fréchet distance).</summary>
    public static SampleQuality Measure(Evaluation evaluation, FeatureStatistics? reference)
    {
        var shares = new double[evaluation.Classes];
        double confidence = 0;
        for (int i = 0; i < evaluation.Count; i++)
        {
            int c = evaluation.Predicted(i);
            shares[c] += 1.0 / evaluation.Count;
            confidence += evaluation.Probability(i, c) / evaluation.Count;
        }
        double? frechet = reference is not null && evaluation.FeatureCount == reference.Mean.Length && evaluation.Count > 1
            ? FeatureStatistics.Of(evaluation).FrechetDistance(reference) : null;
        return new SampleQuality(shares, confidence, frechet, evaluation.Count);
    }
}
