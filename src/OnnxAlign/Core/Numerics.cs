using OnnxAlign.Rewards;
namespace OnnxAlign.Core;

/// <summary>Small numerical helpers shared across the library.</summary>
public static class Numerics
{
    /// <summary>⟨a, b⟩ in double precision.</summary>
    public static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        if (a.Length != b.Length) throw new ArgumentException("vectors of different lengths");
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>log Σ exp(v), overflow-safe (shifted by the maximum).</summary>
    public static double LogSumExp(ReadOnlySpan<double> values)
    {
        double max = double.NegativeInfinity;
        foreach (double v in values) max = Math.Max(max, v);
        if (double.IsNegativeInfinity(max)) return max;
        double sum = 0;
        foreach (double v in values) sum += Math.Exp(v - max);
        return max + Math.Log(sum);
    }

    /// <summary>exp(v − logΣexp v), overflow-safe.</summary>
    public static double[] Softmax(ReadOnlySpan<double> values)
    {
        double lse = LogSumExp(values);
        var result = new double[values.Length];
        for (int i = 0; i < values.Length; i++) result[i] = Math.Exp(values[i] - lse);
        return result;
    }

    /// <summary>The index of the first largest value (a class decision from logits).</summary>
    public static int ArgMax<T>(ReadOnlySpan<T> values) where T : System.Numerics.INumber<T>
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>True when no value is NaN or ±∞ (a sample that may be kept).</summary>
    public static bool AllFinite(ReadOnlySpan<float> values)
    {
        foreach (float v in values) if (!float.IsFinite(v)) return false;
        return true;
    }

    /// <summary>Column means of a row-major [rows, cols] float matrix, in double.</summary>
    public static double[] ColumnMeans(ReadOnlySpan<float> data, int cols)
    {
        var mean = new double[cols];
        AddColumns(data, cols, mean);
        for (int c = 0; c < cols; c++) mean[c] /= data.Length / cols;
        return mean;
    }

    /// <summary>
    /// Adds each column of a row-major [rows, cols] block to <paramref name="sums"/>, row after row: the arithmetic of
    /// <see cref="ColumnMeans"/>, so a file read in row chunks (a merged run's samples) sums to the same bits as one pass.
    /// </summary>
    public static void AddColumns(ReadOnlySpan<float> data, int cols, Span<double> sums)
    {
        int rows = data.Length / cols;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) sums[c] += data[r * cols + c];
    }

    /// <summary>Per-column sample variance (divisor rows − 1): the diagonal of <see cref="ColumnCovariance"/> in O(rows·cols).</summary>
    public static double[] ColumnVariances(ReadOnlySpan<float> data, int cols)
    {
        int rows = data.Length / cols;
        var mean = ColumnMeans(data, cols);
        var variance = new double[cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) { double d = data[r * cols + c] - mean[c]; variance[c] += d * d; }
        for (int c = 0; c < cols; c++) variance[c] /= rows - 1;
        return variance;
    }

    /// <summary>Sample covariance (divisor rows − 1) of a row-major [rows, cols] float matrix, row-major cols × cols.</summary>
    public static double[] ColumnCovariance(ReadOnlySpan<float> data, int cols)
    {
        var mean = ColumnMeans(data, cols);
        var cov = new double[cols * cols];
        AddCenteredProducts(data, cols, mean, cov);
        for (int k = 0; k < cov.Length; k++) cov[k] /= data.Length / cols - 1;
        return cov;
    }

    /// <summary>Adds Σ_r (x_r − mean)(x_r − mean)ᵀ of a row-major block to <paramref name="cov"/> (cols × cols), row after row: <see cref="ColumnCovariance"/>'s arithmetic, chunkable.</summary>
    public static void AddCenteredProducts(ReadOnlySpan<float> data, int cols, ReadOnlySpan<double> mean, Span<double> cov)
    {
        int rows = data.Length / cols;
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < cols; i++)
            {
                double di = data[r * cols + i] - mean[i];
                for (int j = 0; j < cols; j++) cov[i * cols + j] += di * (data[r * cols + j] - mean[j]);
            }
    }

    /// <summary>Solves S·u = b in place (u overwrites b) for a small symmetric positive definite S (row-major k × k) by
    /// Cholesky; returns false when S is not numerically positive definite.</summary>
    public static bool SolveSymmetricPositive(ReadOnlySpan<double> s, Span<double> b)
    {
        int k = b.Length;
        Span<double> l = k <= 16 ? stackalloc double[k * k] : new double[k * k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j <= i; j++)
            {
                double sum = s[i * k + j];
                for (int m = 0; m < j; m++) sum -= l[i * k + m] * l[j * k + m];
                if (i == j)
                {
                    if (!(sum > 0)) return false;
                    l[i * k + i] = Math.Sqrt(sum);
                }
                else l[i * k + j] = sum / l[j * k + j];
            }
        for (int i = 0; i < k; i++)
        {
            double sum = b[i];
            for (int m = 0; m < i; m++) sum -= l[i * k + m] * b[m];
            b[i] = sum / l[i * k + i];
        }
        for (int i = k - 1; i >= 0; i--)
        {
            double sum = b[i];
            for (int m = i + 1; m < k; m++) sum -= l[m * k + i] * b[m];
            b[i] = sum / l[i * k + i];
        }
        return true;
    }

    /// <summary>The largest eigenvalue of a symmetric matrix (row-major k × k), rounded up by a relative 1e-9 so that
    /// it can serve in a priori bounds.</summary>
    public static double LargestEigenvalue(ReadOnlySpan<double> s, int k) => SymmetricEigenvalues(s, k).Max() * (1 + 1e-9) + 1e-300;

    /// <summary>The eigenvalues of a symmetric k × k matrix (row-major), ascending.</summary>
    public static double[] SymmetricEigenvalues(ReadOnlySpan<double> s, int k) => SymmetricEigen(s, k).Values;

    /// <summary>Eigenvalues (ascending) and eigenvectors (column j of the row-major k × k result belongs to value j) of a symmetric matrix.</summary>
    public static (double[] Values, double[] Vectors) SymmetricEigen(ReadOnlySpan<double> s, int k)
    {
        var values = s[..(k * k)].ToArray();
        var matrix = MathNet.Numerics.LinearAlgebra.Matrix<double>.Build.Dense(k, k, (i, j) => values[i * k + j]);
        var evd = matrix.Evd(MathNet.Numerics.LinearAlgebra.Symmetricity.Symmetric);
        var vectors = new double[k * k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) vectors[i * k + j] = evd.EigenVectors[i, j];
        return (evd.EigenValues.Select(e => e.Real).ToArray(), vectors);
    }

    /// <summary>Sample covariance (row-major k × k) of k-vectors around a given mean.</summary>
    public static double[] Covariance(IReadOnlyList<double[]> rows, ReadOnlySpan<double> mean)
    {
        int k = mean.Length;
        var c = new double[k * k];
        foreach (var row in rows)
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) c[i * k + j] += (row[i] - mean[i]) * (row[j] - mean[j]);
        for (int i = 0; i < c.Length; i++) c[i] /= Math.Max(rows.Count - 1, 1);
        return c;
    }

    /// <summary>
    /// Gauss–Hermite nodes and weights for E_{ξ∼N(0,1)}[h(ξ)] (probabilists' Hermite, weights sum to 1), by Golub–Welsch:
    /// the nodes are the eigenvalues of the Jacobi matrix with off-diagonal √i, the weights the squared first
    /// components of its eigenvectors. Exact for polynomials of degree ≤ 2n − 1.
    /// </summary>
    public static (double[] Nodes, double[] Weights) GaussHermite(int n)
    {
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n));
        var jacobi = new double[n * n];
        for (int i = 1; i < n; i++) jacobi[i * n + i - 1] = jacobi[(i - 1) * n + i] = Math.Sqrt(i);
        var (values, vectors) = SymmetricEigen(jacobi, n);
        var weights = new double[n];
        for (int j = 0; j < n; j++) weights[j] = vectors[j] * vectors[j];
        double total = weights.Sum();
        return (values, weights.Select(w => w / total).ToArray());
    }

    /// <summary>The Kolmogorov–Smirnov distance sup |F_n − F| of a sample to a continuous CDF.</summary>
    public static double KolmogorovSmirnov(IEnumerable<double> sample, Func<double, double> cdf)
    {
        var sorted = sample.OrderBy(v => v).ToArray();
        double d = 0;
        for (int i = 0; i < sorted.Length; i++)
        {
            double f = cdf(sorted[i]);
            d = Math.Max(d, Math.Max((i + 1.0) / sorted.Length - f, f - (double)i / sorted.Length));
        }
        return d;
    }
}
