using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.Optimization;
using System.Numerics.Tensors;
using OnnxAlign.Core;

namespace OnnxAlign.Alignment;

/// <summary>A tilt fitted to preferences, and how well it predicts them.</summary>
/// <param name="Theta">θ of q ∝ p·exp⟨θ, x⟩ (the implicit reward is β⟨θ, x⟩).</param>
/// <param name="Intercept">The reference point of the unpaired (KTO-style) fit; 0 for pairs.</param>
/// <param name="TrainAccuracy">Fraction of training pairs (labels) the fit orders (classifies) correctly.</param>
/// <param name="HeldOutAccuracy">The same on the held-out part.</param>
/// <param name="TrainCount">Training pairs (labels).</param>
/// <param name="HeldOutCount">Held-out pairs (labels).</param>
public sealed record PreferenceFit(float[] Theta, double Intercept, double TrainAccuracy, double HeldOutAccuracy, int TrainCount, int HeldOutCount);

/// <summary>
/// Inference-time DPO on the tilt family (DESIGN §5, issue #7): with q_θ ∝ p·exp⟨θ, x⟩ the DPO implicit reward is
/// β log(q_θ/p) = β⟨θ, x⟩ − β log Z(θ), so the Bradley–Terry likelihood of a pair is σ(β⟨θ, x_w − x_l⟩) and fitting θ is
/// L2-regularised logistic regression on the differences x_w − x_l (convex; L-BFGS). q_θ is then sampled exactly.
/// The KTO-style variant takes unpaired labels (desirable / undesirable): σ(±(β⟨θ, x⟩ − z₀)) with a fitted reference z₀.
/// </summary>
public static class PreferenceAlignment
{
    /// <summary>Fits θ to pairs (preferred[i], rejected[i]); the last <paramref name="heldOut"/> fraction is held out.</summary>
    public static PreferenceFit FitPairs(ReadOnlySpan<float> preferred, ReadOnlySpan<float> rejected, int size, double beta = 1, double l2 = 1e-3, double heldOut = 0.2)
    {
        if (preferred.Length != rejected.Length || preferred.Length % size != 0 || preferred.Length == 0)
            throw new ArgumentException("preferred and rejected must hold the same number of samples of the model's size");
        int n = preferred.Length / size;
        var differences = new float[preferred.Length];
        TensorPrimitives.Subtract(preferred, rejected, differences);
        return Fit(differences, Enumerable.Repeat(1.0, n).ToArray(), size, beta, l2, heldOut, intercept: false);
    }

    /// <summary>KTO-style: fits θ and a reference point z₀ to unpaired samples labelled desirable (true) or undesirable (false).</summary>
    public static PreferenceFit FitUnpaired(ReadOnlySpan<float> samples, IReadOnlyList<bool> desirable, int size, double beta = 1, double l2 = 1e-3, double heldOut = 0.2)
    {
        if (samples.Length != desirable.Count * size || desirable.Count == 0) throw new ArgumentException("one label per sample");
        return Fit(samples.ToArray(), desirable.Select(d => d ? 1.0 : -1.0).ToArray(), size, beta, l2, heldOut, intercept: true);
    }

    /// <summary>min over (θ, z₀) of Σ_i softplus(−y_i(β⟨θ, v_i⟩ − z₀)) + (l2/2)‖θ‖² on the training rows, then accuracies.</summary>
    private static PreferenceFit Fit(float[] rows, double[] labels, int size, double beta, double l2, double heldOut, bool intercept)
    {
        if (!(beta > 0) || !(l2 > 0)) throw new ArgumentException("β and the L2 weight must be > 0");
        int n = labels.Length, train = Math.Max(1, (int)Math.Round(n * (1 - heldOut)));
        int dim = size + (intercept ? 1 : 0);
        (double, Vector<double>) Loss(Vector<double> w)
        {
            // In double throughout: a float θ would make the objective step-like at the scale L-BFGS's line search probes.
            double z0 = intercept ? w[size] : 0, loss = 0;
            var gradient = new double[dim];
            for (int i = 0; i < train; i++)
            {
                double dot = 0;
                for (int j = 0; j < size; j++) dot += rows[i * size + j] * w[j];
                double margin = labels[i] * (beta * dot - z0);
                // softplus(−m) = log(1 + e^{−m}), overflow-safe; its derivative in m is −σ(−m).
                loss += margin > 0 ? double.LogP1(Math.Exp(-margin)) : -margin + double.LogP1(Math.Exp(margin));
                double weight = -labels[i] / (1 + Math.Exp(margin));
                for (int j = 0; j < size; j++) gradient[j] += weight * beta * rows[i * size + j];
                if (intercept) gradient[size] -= weight;
            }
            for (int j = 0; j < size; j++) { loss += 0.5 * l2 * w[j] * w[j]; gradient[j] += l2 * w[j]; }
            return (loss / train, Vector<double>.Build.DenseOfArray(gradient) / train);
        }
        var minimum = new LimitedMemoryBfgsMinimizer(1e-8, 1e-12, 1e-12, 10, 2000)
            .FindMinimum(ObjectiveFunction.Gradient(Loss), Vector<double>.Build.Dense(dim)).MinimizingPoint;
        var thetaFit = minimum.Take(size).Select(v => (float)v).ToArray();
        double z = intercept ? minimum[size] : 0;
        double Accuracy(int from, int to) => to <= from ? double.NaN
            : Enumerable.Range(from, to - from).Count(i => labels[i] * (beta * TensorPrimitives.Dot(rows.AsSpan(i * size, size), thetaFit) - z) > 0) / (double)(to - from);
        return new PreferenceFit(thetaFit, z, Accuracy(0, train), Accuracy(train, n), train, n - train);
    }
}
