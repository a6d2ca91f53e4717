using MathNet.Numerics.LinearAlgebra;
using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Alignment;

/// <summary>The structured reward <see cref="RewardFit.Fit"/> produces.</summary>
public enum RewardFitForm
{
    /// <summary>r(x) ≈ ⟨w, x⟩ + b: a linear reward (tilts, constraints, the closed-form prox).</summary>
    Linear,
    /// <summary>For a classifier with a log-softmax card: every class logit fitted linearly, r = log-softmax at the index (low-rank, k = classes: mixtures, constraints, prox).</summary>
    LogProb,
}

/// <summary>A fit of a network reward by a structured one (DESIGN §8: "the regression step turns any ONNX classifier into a linear or low-rank reward").</summary>
/// <param name="W">Rows × sample values: one row (linear) or one per class (log-prob).</param>
/// <param name="B">One offset per row.</param>
/// <param name="Rows">Rows of <paramref name="W"/>.</param>
/// <param name="ClassNames">A name per row (<c>fitted</c> for the linear form, the card's classes otherwise).</param>
/// <param name="Index">The row (class) the reward is.</param>
/// <param name="TrainSamples">Samples the regression saw.</param>
/// <param name="HeldOutSamples">Samples it did not see, on which the agreement is measured.</param>
/// <param name="HeldOutRSquared">1 − Σ(r − r̂)²/Σ(r − r̄)² on held-out samples.</param>
/// <param name="HeldOutCorrelation">Pearson correlation of r and r̂ on held-out samples.</param>
/// <param name="HeldOutArgmaxAgreement">Log-prob form: how often the fitted and the network's predicted class agree on held-out samples; null otherwise.</param>
/// <param name="TrainRSquared">R² on the training samples (against <paramref name="HeldOutRSquared"/>: overfitting).</param>
public sealed record RewardFitResult(float[] W, float[] B, int Rows, string[] ClassNames, int Index, int TrainSamples, int HeldOutSamples,
                                     double HeldOutRSquared, double HeldOutCorrelation, double? HeldOutArgmaxAgreement, double TrainRSquared);

/// <summary>Fits a linear or low-rank reward to a network reward by ridge regression on the pixels.</summary>
public static class RewardFit
{
    /// <summary>
    /// Fits <paramref name="reward"/> on <paramref name="samples"/> (e.g. base samples of the model): the last
    /// <paramref name="heldOut"/> fraction is held out and measures the agreement. Ridge α = <paramref name="ridge"/>·tr(XᵀX)/d on centred pixels.
    /// </summary>
    /// <exception cref="ConfigException">Too few samples, or the log-prob form for a reward that is not a log-softmax classifier (parameter <c>form</c>).</exception>
    public static RewardFitResult Fit(OnnxReward reward, ReadOnlySpan<float> samples, RewardFitForm form, double heldOut = 0.25, double ridge = 1e-2)
    {
        int d = reward.Size, n = samples.Length / d;
        if (!(heldOut is > 0 and < 1)) throw new ArgumentOutOfRangeException(nameof(heldOut), heldOut, "expected a value in (0, 1)");
        if (!(ridge >= 0) || double.IsInfinity(ridge)) throw new ArgumentOutOfRangeException(nameof(ridge), ridge, "expected a finite value ≥ 0");
        int test = Math.Max(2, (int)Math.Round(n * heldOut)), train = n - test;
        if (train < 4) throw ConfigException.For("samples", $": {n} samples leave {train} to fit on; give at least 8");
        if (form == RewardFitForm.LogProb && reward.Card.Transform != "log_softmax")
            throw ConfigException.For("form", $"log-prob fits a classifier whose card says 'transform': 'log_softmax'; {reward.Card.Source} says '{reward.Card.Transform}' (use the linear form)");
        var r = reward.EvaluateBatch(samples);
        int classes = reward.Model.OutputSizes[0];
        var logits = form == RewardFitForm.LogProb ? reward.Outputs(samples) : null;
        int rows = form == RewardFitForm.LogProb ? classes : 1;

        // Targets: the reward itself (linear) or every class logit (log-prob), one column each.
        var x = Matrix<double>.Build.Dense(train, d);
        var means = new double[d];
        for (int i = 0; i < train; i++) for (int j = 0; j < d; j++) means[j] += samples[i * d + j] / (double)train;
        for (int i = 0; i < train; i++) for (int j = 0; j < d; j++) x[i, j] = samples[i * d + j] - means[j];
        var y = Matrix<double>.Build.Dense(train, rows, (i, c) => logits is null ? r[i] : logits[i * classes + c]);
        var yMeans = Enumerable.Range(0, rows).Select(c => y.Column(c).Average()).ToArray();
        for (int c = 0; c < rows; c++) for (int i = 0; i < train; i++) y[i, c] -= yMeans[c];
        var gram = x.TransposeThisAndMultiply(x);
        double alpha = Math.Max(ridge * gram.Trace() / d, 1e-9);
        for (int j = 0; j < d; j++) gram[j, j] += alpha;
        var coefficients = gram.Cholesky().Solve(x.TransposeThisAndMultiply(y));   // d × rows

        var w = new float[rows * d];
        var b = new float[rows];
        for (int c = 0; c < rows; c++)
        {
            double offset = yMeans[c];
            for (int j = 0; j < d; j++)
            {
                w[c * d + j] = (float)coefficients[j, c];
                offset -= coefficients[j, c] * means[j];
            }
            b[c] = (float)offset;
        }

        // What the fitted reward says of each sample, and whether it picks the network's class.
        var fitted = new double[n];
        var agree = new bool[n];
        var row = new double[rows];
        for (int i = 0; i < n; i++)
        {
            var xi = samples.Slice(i * d, d);
            for (int c = 0; c < rows; c++) row[c] = System.Numerics.Tensors.TensorPrimitives.Dot(w.AsSpan(c * d, d), xi) + b[c];
            if (logits is null) { fitted[i] = row[0]; continue; }
            fitted[i] = row[reward.Index] - Numerics.LogSumExp(row);
            agree[i] = Numerics.ArgMax<double>(row) == Numerics.ArgMax<float>(logits.AsSpan(i * classes, classes));
        }
        var held = Enumerable.Range(train, test).ToArray();
        var seen = Enumerable.Range(0, train).ToArray();
        string[] names = form == RewardFitForm.LogProb
            ? Enumerable.Range(0, classes).Select(c => c < reward.Card.ClassNames.Length ? reward.Card.ClassNames[c] : c.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray()
            : ["fitted"];
        return new RewardFitResult(w, b, rows, names, form == RewardFitForm.LogProb ? reward.Index : 0, train, test,
            RSquared(r, fitted, held), Correlation(r, fitted, held), logits is null ? null : held.Average(i => agree[i] ? 1.0 : 0.0), RSquared(r, fitted, seen));
    }

    private static double RSquared(double[] y, double[] fit, int[] rows)
    {
        double mean = rows.Average(i => y[i]);
        double total = rows.Sum(i => (y[i] - mean) * (y[i] - mean)), residual = rows.Sum(i => (y[i] - fit[i]) * (y[i] - fit[i]));
        return total > 0 ? 1 - residual / total : double.NaN;
    }

    private static double Correlation(double[] y, double[] fit, int[] rows)
    {
        double my = rows.Average(i => y[i]), mf = rows.Average(i => fit[i]);
        double sxy = rows.Sum(i => (y[i] - my) * (fit[i] - mf)), sxx = rows.Sum(i => (y[i] - my) * (y[i] - my)), syy = rows.Sum(i => (fit[i] - mf) * (fit[i] - mf));
        return sxx > 0 && syy > 0 ? sxy / Math.Sqrt(sxx * syy) : double.NaN;
    }
}
