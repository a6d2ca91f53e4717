using System.Globalization;
using OnnxAlign.Core;

namespace OnnxAlign.Rewards;

/// <summary>The curvature a <see cref="FeatureFunction"/> declares; the aligners pick their algorithm from it (DESIGN §2, §3).</summary>
public enum Curvature
{
    /// <summary>Neither concave nor convex: only its Lipschitz constant can be used (branch-and-bound).</summary>
    None,

    /// <summary>Concave: the Wasserstein prox is a strongly concave problem.</summary>
    Concave,

    /// <summary>Convex: the KL-aligned law is a mixture of linear tilts (DESIGN §2).</summary>
    Convex,
}

/// <summary>
/// f: ℝᵏ → ℝ of a low-rank reward r(x) = f(Ax) (DESIGN §3), with its declared structure: curvature, Lipschitz constant
/// L (‖∇f‖₂ ≤ L) and, where smooth, gradient-Lipschitz constant M (‖∇²f‖₂ ≤ M) and Hessian.
/// </summary>
public abstract class FeatureFunction
{
    /// <summary>The library's names with their parameters, for help texts and errors.</summary>
    public const string Forms =
        "neg-sq-dist:T1,..,Tk (−‖z−t‖², concave), log-softmax:K (z_K − log Σ exp z, concave), min (concave, nonsmooth), " +
        "ramp:LO,HI (clip((z−lo)/(hi−lo), 0, 1), k=1), bump:C1,..,Ck,W (exp(−‖z−c‖²/2w²)), max (convex), " +
        "logsumexp[:T] (T·log Σ exp(z/T), convex), sq-dist:T1,..,Tk (‖z−t‖², convex), variance (of the k features, convex), " +
        "quadratic:M11,..,Mkk (½ zᵀMz), softplus[:T] (T·log(1 + exp(z/T)), k=1, convex), " +
        "cross-entropy:P1,..,Pk (−Σ p_c log softmax(z)_c, convex: class proportions of logits)";

    /// <summary>k, or null when any number of features is accepted.</summary>
    public abstract int? Dimension { get; }

    /// <summary>Its name and parameters as given.</summary>
    public abstract string Name { get; }

    /// <summary>The declared curvature.</summary>
    public abstract Curvature Curvature { get; }

    /// <summary>True when f is twice differentiable and <see cref="Hessian"/> is available (Newton, L-BFGS).</summary>
    public virtual bool IsSmooth => false;

    /// <summary>L with |f(z) − f(z')| ≤ L‖z − z'‖₂; +∞ when unbounded.</summary>
    public abstract double LipschitzConstant { get; }

    /// <summary>M with ‖∇f(z) − ∇f(z')‖₂ ≤ M‖z − z'‖₂ where f is smooth; +∞ otherwise.</summary>
    public virtual double SmoothnessConstant => double.PositiveInfinity;

    /// <summary>f(z).</summary>
    public abstract double Value(ReadOnlySpan<double> z);

    /// <summary>A (super/sub)gradient of f at z into <paramref name="gradient"/>; returns f(z).</summary>
    public abstract double Gradient(ReadOnlySpan<double> z, Span<double> gradient);

    /// <summary>∇²f(z), row-major k × k, for smooth functions.</summary>
    public virtual void Hessian(ReadOnlySpan<double> z, Span<double> hessian) =>
        throw new NotSupportedException($"{Name} is not twice differentiable");

    /// <summary>Builds a library function from <c>NAME[:PARAMS]</c> for <paramref name="k"/> features.</summary>
    /// <exception cref="ConfigException">Unknown name, bad parameters or a dimension that does not fit.</exception>
    public static FeatureFunction Parse(string text, int k)
    {
        int colon = text.IndexOf(':');
        string name = colon < 0 ? text : text[..colon];
        double[] p = colon < 0 ? [] : ParseNumbers(text[(colon + 1)..], text);
        ConfigException Bad(string why) => new($"feature function '{text}': {why}");
        FeatureFunction f = name switch
        {
            "neg-sq-dist" when p.Length == k => Quadratic.NegativeSquaredDistance(p),
            "sq-dist" when p.Length == k => Quadratic.SquaredDistance(p),
            "neg-sq-dist" or "sq-dist" => throw Bad($"expected {k} target values, one per feature"),
            "variance" when p.Length == 0 && k >= 2 => Quadratic.Variance(k),
            "variance" => throw Bad("takes no parameters and at least 2 features"),
            "quadratic" when p.Length == k * k => new Quadratic(text, p, new double[k]),
            "quadratic" => throw Bad($"expected the {k * k} entries of a symmetric {k}×{k} matrix M (f = ½ zᵀMz), row by row"),
            "log-softmax" when p.Length == 1 && p[0] == Math.Floor(p[0]) && p[0] >= 0 && p[0] < k => new LogSoftmax(k, (int)p[0]),
            "log-softmax" => throw Bad($"expected a class index 0..{k - 1}"),
            "ramp" when p.Length == 2 && p[1] > p[0] => new Ramp(p[0], p[1]),
            "ramp" => throw Bad("expected LO,HI with LO < HI"),
            "bump" when p.Length == k + 1 && p[k] > 0 => new Bump(p[..k], p[k]),
            "bump" => throw Bad($"expected {k} centre values and a width > 0"),
            "max" when p.Length == 0 => new Extreme(largest: true),
            "min" when p.Length == 0 => new Extreme(largest: false),
            "cross-entropy" when p.Length == k && p.All(v => v >= 0) && Math.Abs(p.Sum() - 1) < 1e-6 => new CrossEntropy(p),
            "cross-entropy" => throw Bad($"expected {k} target proportions ≥ 0 that sum to 1"),
            "softplus" when p.Length == 0 => new Softplus(1),
            "softplus" when p.Length == 1 && p[0] > 0 => new Softplus(p[0]),
            "softplus" => throw Bad("expected softplus or softplus:T with a temperature T > 0"),
            "logsumexp" when p.Length == 0 => new LogSumExp(),
            "logsumexp" when p.Length == 1 && p[0] > 0 => new LogSumExp(p[0]),
            "logsumexp" => throw Bad("expected logsumexp or logsumexp:T with a temperature T > 0"),
            _ => throw Bad($"unknown (expected one of: {Forms})"),
        };
        if (f.Dimension is { } d && d != k) throw Bad($"takes {d} feature(s), the features have {k}");
        return f;
    }

    private static double[] ParseNumbers(string text, string whole)
    {
        var parts = text.Split(',');
        var values = new double[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!double.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]) || !double.IsFinite(values[i]))
                throw new ConfigException($"feature function '{whole}': '{parts[i]}' is not a finite number");
        return values;
    }

    private static string Format(IEnumerable<double> values) => string.Join(",", values.Select(v => v.ToString("R", CultureInfo.InvariantCulture)));

    /// <summary>
    /// f(z) = ½ zᵀMz + hᵀz + c with M symmetric: convex when M ⪰ 0 (the Hubbard–Stratonovich case of DESIGN §2),
    /// concave when M ⪯ 0 (a colour or moment target −‖z − t‖²), smooth either way.
    /// </summary>
    public sealed class Quadratic : FeatureFunction
    {
        private readonly double[] _m, _h;
        private readonly double _c;

        /// <summary>f(z) = ½ zᵀMz + hᵀz + c; M row-major k × k, symmetric.</summary>
        /// <exception cref="ConfigException">M is not k × k or not symmetric.</exception>
        public Quadratic(string name, double[] m, double[] h, double c = 0)
        {
            int k = h.Length;
            if (m.Length != k * k) throw new ConfigException($"feature function '{name}': expected {k}×{k} matrix entries, got {m.Length}");
            for (int i = 0; i < k; i++)
                for (int j = 0; j < i; j++)
                    if (Math.Abs(m[i * k + j] - m[j * k + i]) > 1e-12 * (1 + Math.Abs(m[i * k + j])))
                        throw new ConfigException($"feature function '{name}': the matrix is not symmetric (entry {i},{j})");
            (_m, _h, _c, Name) = (m, h, c, name);
            var eigenvalues = Numerics.SymmetricEigenvalues(m, k);
            Curvature = eigenvalues.Min() >= -1e-12 ? Curvature.Convex : eigenvalues.Max() <= 1e-12 ? Curvature.Concave : Curvature.None;
            SmoothnessConstant = eigenvalues.Max(Math.Abs);
        }

        /// <summary>−‖z − t‖² (concave).</summary>
        public static Quadratic NegativeSquaredDistance(double[] target) => SquaredDistance($"neg-sq-dist:{Format(target)}", target, -1);

        /// <summary>‖z − t‖² (convex: "distance from a point").</summary>
        public static Quadratic SquaredDistance(double[] target) => SquaredDistance($"sq-dist:{Format(target)}", target, +1);

        /// <summary>The variance of the k features around their mean, (1/k) Σ (z_j − z̄)² (convex: contrast between regions).</summary>
        public static Quadratic Variance(int k)
        {
            var m = new double[k * k];
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) m[i * k + j] = 2.0 / k * ((i == j ? 1 : 0) - 1.0 / k);
            return new Quadratic("variance", m, new double[k]);
        }

        private static Quadratic SquaredDistance(string name, double[] target, int sign)
        {
            int k = target.Length;
            var m = new double[k * k];
            for (int j = 0; j < k; j++) m[j * k + j] = 2 * sign;
            return new Quadratic(name, m, target.Select(t => -2 * sign * t).ToArray(), sign * target.Sum(t => t * t));
        }

        /// <summary>M, row-major.</summary>
        public ReadOnlySpan<double> Matrix => _m;

        /// <summary>h.</summary>
        public ReadOnlySpan<double> Linear => _h;

        /// <summary>c.</summary>
        public double Constant => _c;

        /// <inheritdoc/>
        public override int? Dimension => _h.Length;

        /// <inheritdoc/>
        public override string Name { get; }

        /// <inheritdoc/>
        public override Curvature Curvature { get; }

        /// <inheritdoc/>
        public override bool IsSmooth => true;

        /// <inheritdoc/>
        public override double LipschitzConstant => double.PositiveInfinity;

        /// <inheritdoc/>
        public override double SmoothnessConstant { get; }

        /// <inheritdoc/>
        public override double Value(ReadOnlySpan<double> z) => Gradient(z, stackalloc double[z.Length]);

        /// <inheritdoc/>
        public override double Gradient(ReadOnlySpan<double> z, Span<double> gradient)
        {
            int k = _h.Length;
            double value = _c;
            for (int i = 0; i < k; i++)
            {
                double mz = 0;
                for (int j = 0; j < k; j++) mz += _m[i * k + j] * z[j];
                gradient[i] = mz + _h[i];
                value += z[i] * (0.5 * mz + _h[i]);
            }
            return value;
        }

        /// <inheritdoc/>
        public override void Hessian(ReadOnlySpan<double> z, Span<double> hessian) => _m.CopyTo(hessian);
    }

    /// <summary>f(z) = z_K − log Σ_j exp z_j, the log-probability of class K under logits z: concave, smooth, L ≤ √2.</summary>
    public sealed class LogSoftmax(int k, int target) : FeatureFunction
    {
        /// <inheritdoc/>
        public override int? Dimension => k;

        /// <inheritdoc/>
        public override string Name => $"log-softmax:{target}";

        /// <inheritdoc/>
        public override Curvature Curvature => Curvature.Concave;

        /// <inheritdoc/>
        public override bool IsSmooth => true;

        /// <inheritdoc/>
        public override double LipschitzConstant => Math.Sqrt(2);

        /// <inheritdoc/>
        public override double SmoothnessConstant => 1;

        /// <inheritdoc/>
        public override double Value(ReadOnlySpan<double> z) => z[target] - Numerics.LogSumExp(z[..k]);

        /// <inheritdoc/>
        public override double Gradient(ReadOnlySpan<double> z, Span<double> gradient)
        {
            var p = Numerics.Softmax(z[..k]);
            for (int j = 0; j < k; j++) gradient[j] = (j == target ? 1 : 0) - p[j];
            return Value(z);
        }

        /// <inheritdoc/>
        public override void Hessian(ReadOnlySpan<double> z, Span<double> hessian)
        {
            var p = Numerics.Softmax(z[..k]);
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) hessian[i * k + j] = p[i] * p[j] - (i == j ? p[i] : 0);
        }
    }

    /// <summary>f(z) = max_j z_j (convex) or min_j z_j (concave, not smooth); L = 1.</summary>
    public sealed class Extreme(bool largest) : FeatureFunction
    {
        /// <summary>True for max, false for min.</summary>
        public bool Largest => largest;

        /// <inheritdoc/>
        public override int? Dimension => null;

        /// <inheritdoc/>
        public override string Name => largest ? "max" : "min";

        /// <inheritdoc/>
        public override Curvature Curvature => largest ? Curvature.Convex : Curvature.Concave;

        /// <inheritdoc/>
        public override double LipschitzConstant => 1;

        /// <inheritdoc/>
        public override double Value(ReadOnlySpan<double> z) => Extremum(z, default, largest);

        /// <inheritdoc/>
        public override double Gradient(ReadOnlySpan<double> z, Span<double> gradient) => Extremum(z, gradient, largest);
    }

    /// <summary>max_j z_j or min_j z_j, and (when <paramref name="gradient"/> is not empty) the indicator of the first
    /// extreme coordinate as a sub/supergradient.</summary>
    private static double Extremum(ReadOnlySpan<double> z, Span<double> gradient, bool largest)
    {
        int arg = 0;
        for (int j = 1; j < z.Length; j++)
            if (largest ? z[j] > z[arg] : z[j] < z[arg]) arg = j;
        if (!gradient.IsEmpty)
        {
            gradient[..z.Length].Clear();
            gradient[arg] = 1;
        }
        return z[arg];
    }

    /// <summary>f(z) = T·log Σ_j exp(z_j/T): convex, smooth, L = 1, M = 1/T ("any of these classes"; → max as T → 0).</summary>
    public sealed class LogSumExp(double temperature = 1) : FeatureFunction
    {
        /// <summary>T.</summary>
        public double Temperature => temperature;

        /// <inheritdoc/>
        public override int? Dimension => null;

        /// <inheritdoc/>
        public override string Name => temperature == 1 ? "logsumexp" : $"logsumexp:{Format([temperature])}";

        /// <inheritdoc/>
        public override Curvature Curvature => Curvature.Convex;

        /// <inheritdoc/>
        public override bool IsSmooth => true;

        /// <inheritdoc/>
        public override double LipschitzConstant => 1;

        /// <inheritdoc/>
        public override double SmoothnessConstant => 1 / temperature;

        /// <inheritdoc/>
        public override double Value(ReadOnlySpan<double> z) => temperature * Numerics.LogSumExp(Scaled(z));

        /// <inheritdoc/>
        public override double Gradient(ReadOnlySpan<double> z, Span<double> gradient)
        {
            var scaled = Scaled(z);
            Numerics.Softmax(scaled).CopyTo(gradient);
            return temperature * Numerics.LogSumExp(scaled);
        }

        /// <inheritdoc/>
        public override void Hessian(ReadOnlySpan<double> z, Span<double> hessian)
        {
            var p = Numerics.Softmax(Scaled(z));
            int k = z.Length;
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) hessian[i * k + j] = ((i == j ? p[i] : 0) - p[i] * p[j]) / temperature;
        }

        private double[] Scaled(ReadOnlySpan<double> z)
        {
            var scaled = new double[z.Length];
            for (int j = 0; j < z.Length; j++) scaled[j] = z[j] / temperature;
            return scaled;
        }
    }

    /// <summary>
    /// f(z) = −Σ_c p_c log softmax(z)_c = log Σ exp z − ⟨p, z⟩: the cross-entropy of target proportions p against the
    /// softmax of logits z; convex, smooth, ∇f = softmax(z) − p (zero where the softmax equals p).
    /// </summary>
    public sealed class CrossEntropy(double[] proportions) : FeatureFunction
    {
        /// <inheritdoc/>
        public override int? Dimension => proportions.Length;

        /// <inheritdoc/>
        public override string Name => $"cross-entropy:{Format(proportions)}";

        /// <inheritdoc/>
        public override Curvature Curvature => Curvature.Convex;

        /// <inheritdoc/>
        public override bool IsSmooth => true;

        /// <inheritdoc/>
        public override double LipschitzConstant => Math.Sqrt(2);

        /// <inheritdoc/>
        public override double SmoothnessConstant => 1;

        /// <inheritdoc/>
        public override double Value(ReadOnlySpan<double> z)
        {
            double value = Numerics.LogSumExp(z);
            for (int c = 0; c < proportions.Length; c++) value -= proportions[c] * z[c];
            return value;
        }

        /// <inheritdoc/>
        public override double Gradient(ReadOnlySpan<double> z, Span<double> gradient)
        {
            var softmax = Numerics.Softmax(z);
            for (int c = 0; c < proportions.Length; c++) gradient[c] = softmax[c] - proportions[c];
            return Value(z);
        }

        /// <inheritdoc/>
        public override void Hessian(ReadOnlySpan<double> z, Span<double> hessian) => new LogSumExp().Hessian(z, hessian);
    }

    /// <summary>f(z) = T·log(1 + exp(z/T)) of one feature: a smooth hinge ("at least this much"), convex, L = 1, M = 1/(4T).</summary>
    public sealed class Softplus(double temperature) : FeatureFunction
    {
        /// <inheritdoc/>
        public override int? Dimension => 1;

        /// <inheritdoc/>
        public override string Name => temperature == 1 ? "softplus" : $"softplus:{Format([temperature])}";

        /// <inheritdoc/>
        public override Curvature Curvature => Curvature.Convex;

        /// <inheritdoc/>
        public override bool IsSmooth => true;

        /// <inheritdoc/>
        public override double LipschitzConstant => 1;

        /// <inheritdoc/>
        public override double SmoothnessConstant => 0.25 / temperature;

        /// <inheritdoc/>
        public override double Value(ReadOnlySpan<double> z) => temperature * Numerics.LogSumExp([0, z[0] / temperature]);

        /// <inheritdoc/>
        public override double Gradient(ReadOnlySpan<double> z, Span<double> gradient)
        {
            gradient[0] = 1 / (1 + Math.Exp(-z[0] / temperature));
            return Value(z);
        }

        /// <inheritdoc/>
        public override void Hessian(ReadOnlySpan<double> z, Span<double> hessian)
        {
            double s = 1 / (1 + Math.Exp(-z[0] / temperature));
            hessian[0] = s * (1 - s) / temperature;
        }
    }

    /// <summary>f(z) = clip((z − lo)/(hi − lo), 0, 1) of one feature: a clipped linear score, neither concave nor convex,
    /// L = 1/(hi − lo).</summary>
    public sealed class Ramp(double low, double high) : FeatureFunction
    {
        /// <inheritdoc/>
        public override int? Dimension => 1;

        /// <inheritdoc/>
        public override string Name => $"ramp:{Format([low, high])}";

        /// <inheritdoc/>
        public override Curvature Curvature => Curvature.None;

        /// <inheritdoc/>
        public override double LipschitzConstant => 1 / (high - low);

        /// <inheritdoc/>
        public override double Value(ReadOnlySpan<double> z) => Math.Clamp((z[0] - low) / (high - low), 0, 1);

        /// <inheritdoc/>
        public override double Gradient(ReadOnlySpan<double> z, Span<double> gradient)
        {
            gradient[0] = z[0] > low && z[0] < high ? 1 / (high - low) : 0;
            return Value(z);
        }
    }

    /// <summary>f(z) = exp(−‖z − c‖²/(2w²)): a smooth bump, neither concave nor convex, L = 1/(w√e), M = 1/w².</summary>
    public sealed class Bump(double[] centre, double width) : FeatureFunction
    {
        /// <inheritdoc/>
        public override int? Dimension => centre.Length;

        /// <inheritdoc/>
        public override string Name => $"bump:{Format([.. centre, width])}";

        /// <inheritdoc/>
        public override Curvature Curvature => Curvature.None;

        /// <inheritdoc/>
        public override double LipschitzConstant => 1 / (width * Math.Sqrt(Math.E));

        /// <inheritdoc/>
        public override double SmoothnessConstant => 1 / (width * width);

        /// <inheritdoc/>
        public override double Value(ReadOnlySpan<double> z)
        {
            double s = 0;
            for (int j = 0; j < centre.Length; j++) s += (z[j] - centre[j]) * (z[j] - centre[j]);
            return Math.Exp(-s / (2 * width * width));
        }

        /// <inheritdoc/>
        public override double Gradient(ReadOnlySpan<double> z, Span<double> gradient)
        {
            double v = Value(z);
            for (int j = 0; j < centre.Length; j++) gradient[j] = -v * (z[j] - centre[j]) / (width * width);
            return v;
        }
    }
}
